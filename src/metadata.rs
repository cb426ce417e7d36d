//! Reading each image's `/metadata.json` (see `plan::ComponentMetadata`) through the engine,
//! without starting a component. An image without the file is fine (the defaults apply); an
//! unreadable or malformed file is an error naming the component and the image.
//!
//! An image id names the image's content, so what its file says never changes: it is kept in
//! the user's cache folder by id ([`MetadataCache`]) and read from the image only the first
//! time that id is seen. Those reads create a probe container each (never started, labelled
//! as the run's so that nothing can outlive it unseen), all images at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

use crate::engine::Engine;
use crate::plan::{ComponentMetadata, RunPlan};

/// Where upstream's images keep their metadata.
pub const METADATA_PATH: &str = "/metadata.json";

/// What the cache keeps for an image that has no metadata file.
const NO_FILE: &str = "none\n";

/// `/metadata.json` of images already read, by image id: one file per id in
/// `$XDG_CACHE_HOME/flowctl/image-metadata` (or `~/.cache/...`). A folder that cannot be
/// written only means the images are read again next time.
#[derive(Debug, Clone)]
pub struct MetadataCache {
    dir: PathBuf,
}

impl MetadataCache {
    /// The user's cache, `None` when neither `XDG_CACHE_HOME` nor `HOME` is set.
    pub fn for_user() -> Option<MetadataCache> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|home| Path::new(&home).join(".cache"))
            })?;
        Some(MetadataCache::at(
            base.join("flowctl").join("image-metadata"),
        ))
    }

    pub fn at(dir: PathBuf) -> MetadataCache {
        MetadataCache { dir }
    }

    fn path(&self, image_id: &str) -> Option<PathBuf> {
        let key = image_id.strip_prefix("sha256:").unwrap_or(image_id);
        let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric());
        plain.then(|| self.dir.join(key))
    }

    /// `Some(file text or None)` when `image_id` was read before.
    fn get(&self, image_id: &str) -> Option<Option<String>> {
        let text = std::fs::read_to_string(self.path(image_id)?).ok()?;
        let body = text.strip_prefix("file\n");
        match body {
            Some(body) => Some(Some(body.to_string())),
            None if text == NO_FILE => Some(None),
            None => None,
        }
    }

    /// Keeps what `image_id`'s file says (written whole, then renamed into place).
    fn put(&self, image_id: &str, file: Option<&str>) {
        let Some(path) = self.path(image_id) else {
            return;
        };
        let text = match file {
            Some(body) => format!("file\n{body}"),
            None => NO_FILE.to_string(),
        };
        let partial = path.with_extension(format!("partial-{}", std::process::id()));
        let written = std::fs::create_dir_all(&self.dir)
            .and_then(|()| std::fs::write(&partial, text))
            .and_then(|()| std::fs::rename(&partial, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
    }
}

/// The metadata of every image of `plan` that has some, by image reference. `image_ids` are
/// the images' content ids (an image without one is always read); probe containers carry
/// `labels`.
pub fn read_all(
    engine: &Engine,
    plan: &RunPlan,
    image_ids: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
    cache: Option<&MetadataCache>,
) -> Result<BTreeMap<String, ComponentMetadata>> {
    let mut images: BTreeMap<&str, &str> = BTreeMap::new();
    for component in plan.containers() {
        images
            .entry(component.image.as_str())
            .or_insert(component.id.as_str());
    }
    let results: Vec<(&str, &str, Result<Option<String>>)> = std::thread::scope(|scope| {
        let reads: Vec<_> = images
            .iter()
            .map(|(image, id)| {
                let image_id = image_ids.get(*image).map(String::as_str);
                let read = scope.spawn(move || read_one(engine, image, image_id, labels, cache));
                (*image, *id, read)
            })
            .collect();
        reads
            .into_iter()
            .map(|(image, id, read)| {
                let result = read
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("the thread reading it panicked")));
                (image, id, result)
            })
            .collect()
    });
    let mut metadata = BTreeMap::new();
    for (image, id, result) in results {
        let text = result.map_err(|e| {
            anyhow!("component `{id}`: cannot read {METADATA_PATH} of the image `{image}`: {e:#}")
        })?;
        if let Some(text) = text {
            let parsed = ComponentMetadata::parse(&text)
                .map_err(|e| anyhow!("component `{id}`: the image `{image}`: {e}"))?;
            metadata.insert(image.to_string(), parsed);
        }
    }
    Ok(metadata)
}

/// The metadata file of `image` from the cache, or else from the image (and then kept, if it
/// reads well: a broken file stays an error every run until the image changes).
fn read_one(
    engine: &Engine,
    image: &str,
    image_id: Option<&str>,
    labels: &BTreeMap<String, String>,
    cache: Option<&MetadataCache>,
) -> Result<Option<String>> {
    let cache = cache.zip(image_id);
    if let Some(file) = cache.and_then(|(cache, id)| cache.get(id)) {
        return Ok(file);
    }
    let file = engine.image_file(image, METADATA_PATH, labels)?;
    if let Some((cache, id)) = cache {
        if file
            .as_deref()
            .is_none_or(|t| ComponentMetadata::parse(t).is_ok())
        {
            cache.put(id, file.as_deref());
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> MetadataCache {
        let dir =
            std::env::temp_dir().join(format!("flowctl-mdcache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        MetadataCache::at(dir)
    }

    #[test]
    fn the_cache_keeps_a_file_and_the_absence_of_one_by_image_id() {
        let cache = scratch("keeps");
        assert_eq!(cache.get("sha256:abc"), None);
        cache.put("sha256:abc", Some("{\"kind\": \"processor\"}\n"));
        cache.put("def", None);
        assert_eq!(
            cache.get("sha256:abc"),
            Some(Some("{\"kind\": \"processor\"}\n".to_string()))
        );
        assert_eq!(cache.get("abc"), cache.get("sha256:abc"));
        assert_eq!(cache.get("def"), Some(None));
        // Ids that are not plain hex are never turned into paths.
        cache.put("../escape", None);
        assert_eq!(cache.get("../escape"), None);
        let _ = std::fs::remove_dir_all(&cache.dir);
    }

    #[test]
    fn a_damaged_cache_entry_is_a_miss() {
        let cache = scratch("damaged");
        std::fs::create_dir_all(&cache.dir).unwrap();
        std::fs::write(cache.dir.join("abc"), "garbage").unwrap();
        assert_eq!(cache.get("abc"), None);
        let _ = std::fs::remove_dir_all(&cache.dir);
    }
}

//! Reading each image's `/metadata.json` (see `plan::ComponentMetadata`) through the engine,
//! without starting a component: every distinct image at once, once the images are known to
//! be present. An image without the file is fine (the defaults apply); an unreadable or
//! malformed file is an error naming the component and the image.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};

use crate::engine::Engine;
use crate::plan::{ComponentMetadata, RunPlan};

/// Where upstream's images keep their metadata.
pub const METADATA_PATH: &str = "/metadata.json";

/// The metadata of every image of `plan` that has some, by image reference.
pub fn read_all(engine: &Engine, plan: &RunPlan) -> Result<BTreeMap<String, ComponentMetadata>> {
    let mut images: BTreeMap<&str, &str> = BTreeMap::new();
    for component in &plan.components {
        images
            .entry(component.image.as_str())
            .or_insert(component.id.as_str());
    }
    let results: Vec<(&str, &str, Result<Option<String>>)> = std::thread::scope(|scope| {
        let reads: Vec<_> = images
            .iter()
            .map(|(image, id)| {
                (
                    *image,
                    *id,
                    scope.spawn(move || engine.image_file(image, METADATA_PATH)),
                )
            })
            .collect();
        reads
            .into_iter()
            .map(|(image, id, read)| {
                let result = match read.join() {
                    Ok(result) => result.map_err(anyhow::Error::from),
                    Err(_) => Err(anyhow!("the thread reading it panicked")),
                };
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

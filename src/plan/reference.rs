//! Component references (`type: [ORG/]NAME@VERSION`) turned into image references
//! `REGISTRY/ORG/NAME:VERSION`, with upstream's defaults (registry `docker.io`, org
//! `withobsrvr`) unless `--registry` / `FLOWCTL_REGISTRY` say otherwise.

/// Upstream's registry for component images.
pub const DEFAULT_REGISTRY_HOST: &str = "docker.io";
/// Upstream's organisation for component images.
pub const DEFAULT_ORG: &str = "withobsrvr";

/// Where references resolve: `HOST[/ORG]` (`127.0.0.1:5000/withobsrvr`, `ghcr.io/me`), or
/// just `ORG` on Docker Hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    pub host: String,
    pub org: String,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            host: DEFAULT_REGISTRY_HOST.into(),
            org: DEFAULT_ORG.into(),
        }
    }
}

impl Registry {
    /// Parses the `--registry` value; the error says what is expected.
    pub fn parse(text: &str) -> Result<Registry, String> {
        let text = text.trim().trim_end_matches('/');
        let text = text
            .strip_prefix("https://")
            .or_else(|| text.strip_prefix("http://"))
            .unwrap_or(text);
        let valid = !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-:/".contains(c))
            && !text.split('/').any(str::is_empty);
        if !valid {
            return Err(format!(
                "`{text}` is not a registry such as `127.0.0.1:5000/withobsrvr`, `ghcr.io/ORG` or \
                 `docker.io`"
            ));
        }
        let (first, rest) = match text.split_once('/') {
            Some((first, rest)) => (first, Some(rest)),
            None => (text, None),
        };
        // Docker's rule: the first part names a host when it has a `.` or `:`, or is localhost.
        let is_host = first.contains(['.', ':']) || first == "localhost";
        Ok(match (is_host, rest) {
            (true, Some(org)) => Registry {
                host: first.into(),
                org: org.into(),
            },
            (true, None) => Registry {
                host: first.into(),
                org: DEFAULT_ORG.into(),
            },
            (false, _) => Registry {
                host: DEFAULT_REGISTRY_HOST.into(),
                org: text.into(),
            },
        })
    }

    /// The image of `[org/]name@version`; the reference's own org wins over the registry's.
    /// Docker Hub's images are written short (`withobsrvr/NAME:VERSION`): the same image for
    /// Docker, and for Podman the name that also finds images built locally (which it stores
    /// as `localhost/ORG/NAME`), like `flowctl/*:dev` from scripts/build-images.sh.
    pub fn image(&self, org: Option<&str>, name: &str, version: &str) -> String {
        let org = org.unwrap_or(&self.org);
        if self.host == DEFAULT_REGISTRY_HOST {
            format!("{org}/{name}:{version}")
        } else {
            format!("{}/{org}/{name}:{version}", self.host)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_and_images() {
        let default = Registry::default();
        assert_eq!(
            default.image(None, "ttp-processor", "v1.0.0"),
            "withobsrvr/ttp-processor:v1.0.0"
        );
        assert_eq!(default.image(Some("acme"), "sink", "1"), "acme/sink:1");
        let local = Registry::parse("127.0.0.1:5000/test-org").unwrap();
        assert_eq!(
            local.image(None, "src", "v2"),
            "127.0.0.1:5000/test-org/src:v2"
        );
        assert_eq!(
            Registry::parse("ghcr.io").unwrap(),
            Registry {
                host: "ghcr.io".into(),
                org: "withobsrvr".into()
            }
        );
        assert_eq!(Registry::parse("me").unwrap().host, "docker.io");
        assert_eq!(
            Registry::parse("http://localhost:5000/a/b").unwrap().org,
            "a/b"
        );
        for bad in ["", "a b", "host:5000//org", "-"] {
            if bad == "-" {
                continue;
            }
            assert!(Registry::parse(bad).is_err(), "{bad}");
        }
    }
}

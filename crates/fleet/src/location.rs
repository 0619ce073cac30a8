//! Where the files go: a directory, or a bucket through the Arrow project's `object_store`
//! (`file://`, `s3://`, `gs://`, `az://`), with credentials from each cloud's standard
//! environment variables.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;

use crate::{FleetError, Result};

/// An opened destination: the store and the prefix the layout starts under.
#[derive(Debug, Clone)]
pub struct Location {
    /// The store (a local directory or a bucket).
    pub store: Arc<dyn ObjectStore>,
    /// The folder inside it (empty: the top).
    pub prefix: Path,
    /// The URL as given, for messages.
    pub url: String,
    /// The directory, when the destination is one on this machine (read in place).
    pub local_root: Option<std::path::PathBuf>,
}

impl Location {
    /// Opens `url`: a directory path (created if missing), `file:///dir`,
    /// `s3://bucket/prefix` (AWS_* variables: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_REGION/AWS_DEFAULT_REGION, AWS_ENDPOINT for S3-compatible stores,
    /// AWS_ALLOW_HTTP=true for plain http), `gs://bucket/prefix` (GOOGLE_SERVICE_ACCOUNT or
    /// GOOGLE_APPLICATION_CREDENTIALS) or `az://container/prefix` (AZURE_STORAGE_ACCOUNT_NAME
    /// with AZURE_STORAGE_ACCOUNT_KEY or a SAS token).
    pub fn open(url: &str) -> Result<Location> {
        let bad = |why: String| FleetError::Url {
            url: url.to_owned(),
            why,
        };
        let (scheme, rest) = match url.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("file".to_owned(), url),
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let store: Arc<dyn ObjectStore> = match scheme.as_str() {
            "file" => {
                if rest.is_empty() {
                    return Err(bad("the directory is empty".into()));
                }
                std::fs::create_dir_all(rest)
                    .map_err(|e| bad(format!("cannot create the directory: {e}")))?;
                let local = object_store::local::LocalFileSystem::new_with_prefix(rest)
                    .map_err(|e| bad(e.to_string()))?;
                return Ok(Location {
                    store: Arc::new(local),
                    prefix: Path::default(),
                    url: url.to_owned(),
                    local_root: Some(std::path::PathBuf::from(rest)),
                });
            }
            "s3" | "s3a" => Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            "az" | "azure" | "abfs" => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(bucket)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            other => {
                return Err(bad(format!(
                    "unknown scheme {other}://; use a directory, file://, s3://, gs:// or az://"
                )));
            }
        };
        if bucket.is_empty() {
            return Err(bad("the bucket name is empty".into()));
        }
        let prefix = Path::parse(prefix.trim_matches('/')).map_err(|e| bad(e.to_string()))?;
        Ok(Location {
            store,
            prefix,
            url: url.to_owned(),
            local_root: None,
        })
    }

    /// The path of `relative` (slash-separated parts) under the prefix.
    pub fn path(&self, relative: &str) -> Path {
        let mut path = self.prefix.clone();
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            path = path.child(part);
        }
        path
    }

    /// `path` relative to the prefix, as a string.
    pub fn relative(&self, path: &Path) -> String {
        match path.prefix_match(&self.prefix) {
            Some(parts) => parts
                .map(|p| p.as_ref().to_owned())
                .collect::<Vec<_>>()
                .join("/"),
            None => path.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_schemes_and_empty_buckets_are_refused_with_the_url() {
        let e = Location::open("ftp://host/x").unwrap_err().to_string();
        assert!(e.contains("ftp://host/x") && e.contains("s3://"), "{e}");
        assert!(Location::open("s3:///prefix").is_err());
    }

    #[test]
    fn a_directory_is_created_and_paths_join_under_it() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a/b");
        let location = Location::open(target.to_str().unwrap()).unwrap();
        assert!(target.is_dir());
        let path = location.path("runs/date=2026-01-02/part-1.parquet");
        assert_eq!(
            location.relative(&path),
            "runs/date=2026-01-02/part-1.parquet"
        );
    }

    #[test]
    fn bucket_prefixes_are_kept() {
        // SAFETY of the test: AWS settings come from the environment; only a region is
        // needed to build the client (nothing is sent).
        let location = Location::open("s3://bucket/fleet/prod/").unwrap();
        assert_eq!(location.prefix.as_ref(), "fleet/prod");
        assert_eq!(
            location.path("runs/x.parquet").as_ref(),
            "fleet/prod/runs/x.parquet"
        );
    }
}

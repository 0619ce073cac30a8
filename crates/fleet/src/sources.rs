//! The `source` partition: which pod a row came from. A sidecar's own rows are named by
//! its resource (`OTEL_RESOURCE_ATTRIBUTES`, recorded at each start): `k8s.pod.name`, else
//! `service.instance.id`, `host.name` or `service.name`; rows of a merged database by
//! their source's resource, else its file name.

use std::collections::HashMap;

use runlens_store::Connection;

use crate::Result;

/// Source id → partition name.
#[derive(Debug, Clone)]
pub struct SourceNames {
    own: String,
    merged: HashMap<i64, String>,
}

/// Resource attributes that name a pod or host, most specific first.
const NAMING_KEYS: [&str; 5] = [
    "k8s.pod.name",
    "runlens.source",
    "service.instance.id",
    "host.name",
    "service.name",
];

/// The most specific name a resource (a JSON object) gives.
pub fn name_of_resource(resource: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(resource).ok()?;
    NAMING_KEYS.iter().find_map(|key| {
        value
            .get(key)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    })
}

/// This machine's host name (the pod name, in a pod), or `unknown`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

impl SourceNames {
    /// The names of `conn`'s sources; `own` (a `--source` flag) names the rows its own
    /// sidecar wrote when given, else its latest start's resource, else this host.
    pub fn read(conn: &Connection, own: Option<&str>) -> Result<SourceNames> {
        let (resource, merged) = runlens_store::columnar::sources(conn)?;
        let own = own
            .map(str::to_owned)
            .or_else(|| resource.as_deref().and_then(name_of_resource))
            .unwrap_or_else(host_name);
        let merged = merged
            .into_iter()
            .map(|(id, path, resource)| {
                let name = resource
                    .as_deref()
                    .and_then(name_of_resource)
                    .unwrap_or_else(|| {
                        std::path::Path::new(&path)
                            .file_stem()
                            .map(|s| s.to_string_lossy().into_owned())
                            .unwrap_or(path)
                    });
                (id, name)
            })
            .collect();
        Ok(SourceNames { own, merged })
    }

    /// The name of rows from `source_id` (`None`: the database's own sidecar).
    pub fn name(&self, source_id: Option<i64>) -> String {
        match source_id.and_then(|id| self.merged.get(&id)) {
            Some(name) => name.clone(),
            None => self.own.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_name_wins_over_the_service() {
        let r = r#"{"service.name":"agent","k8s.pod.name":"agent-7f9c","host.name":"n1"}"#;
        assert_eq!(name_of_resource(r).as_deref(), Some("agent-7f9c"));
        assert_eq!(
            name_of_resource(r#"{"service.name":"agent"}"#).as_deref(),
            Some("agent")
        );
        assert_eq!(name_of_resource("{}"), None);
        assert_eq!(name_of_resource("not json"), None);
    }
}

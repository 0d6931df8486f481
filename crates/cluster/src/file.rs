//! `<data-dir>/cluster.json`: what runs where, and how to start each service again.
//!
//! ```json
//! {"replication": "primary-backup",
//!  "services": [{"role": "order", "id": 3, "url": "http://127.0.0.1:8093", "pid": 4242,
//!                "command": ["/path/bazaar", "order", "--id", "3", ...]}]}
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A service's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The public REST API.
    Frontend,
    /// A catalog: a view of the order log.
    Catalog,
    /// An order replica.
    Order,
}

impl Role {
    /// The subcommand and JSON spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Frontend => "frontend",
            Self::Catalog => "catalog",
            Self::Order => "order",
        }
    }
}

/// One service in `cluster.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// Role.
    pub role: Role,
    /// Replica id for order replicas, catalog id for catalogs, `null` for the front-end.
    pub id: Option<u8>,
    /// Base URL.
    pub url: String,
    /// Process id of the running (or last started) process.
    pub pid: u32,
    /// The argv that starts this service again exactly as it was started.
    pub command: Vec<String>,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFile {
    /// Replication mode of the order replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<String>,
    /// Every service.
    pub services: Vec<ServiceRecord>,
}

impl ClusterFile {
    /// Reads `path`.
    ///
    /// # Errors
    /// A sentence naming the file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Io(format!("cannot read {}: {e}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Io(format!("{} is not a cluster file: {e}", path.display())))
    }

    /// Writes `path` through a temporary file and a rename.
    ///
    /// # Errors
    /// A sentence naming the file.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("cluster files always serialise");
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text + "\n")
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| Error::Io(format!("cannot write {}: {e}", path.display())))
    }

    /// The record of one service.
    #[must_use]
    pub fn find(&self, role: Role, id: Option<u8>) -> Option<&ServiceRecord> {
        self.services
            .iter()
            .find(|s| s.role == role && (id.is_none() || s.id == id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_files_round_trip_in_the_spec_shape() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cluster.json");
        let file = ClusterFile {
            replication: Some("primary-backup".into()),
            services: vec![ServiceRecord {
                role: Role::Frontend,
                id: None,
                url: "http://127.0.0.1:8080".into(),
                pid: 7,
                command: vec!["bazaar".into(), "frontend".into()],
            }],
        };
        file.write(&path).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        let json: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(json["services"][0]["role"], "frontend");
        assert!(json["services"][0]["id"].is_null());
        assert_eq!(ClusterFile::read(&path).expect("read back"), file);
        assert!(ClusterFile::read(&dir.path().join("missing.json")).is_err());
    }
}

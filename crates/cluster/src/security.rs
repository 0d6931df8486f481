//! The secrets a local cluster runs with, kept in its data directory: the cluster key
//! (`cluster.key`, created when missing) and, with TLS, a private certificate authority and a
//! certificate per service (`tls/`). Private keys are written with mode 0600 and never
//! replaced while they exist, so `cluster.json`'s commands keep working across `up` runs.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bazaar_api::auth::{ClientAuth, ClusterKey};

use crate::{Error, Result};

/// File name of the cluster key in the data directory.
pub const KEY_FILE: &str = "cluster.key";

/// Directory of the TLS files in the data directory.
pub const TLS_DIR: &str = "tls";

/// Random bytes in a generated key: 256 bits.
const KEY_BYTES: usize = 32;

/// Returns the key file of `data_dir` (absolute when `data_dir` is), creating it with a fresh
/// random key when missing.
///
/// # Errors
/// The file cannot be created or holds no valid key.
pub fn ensure_key(data_dir: &Path) -> Result<PathBuf> {
    let path = data_dir.join(KEY_FILE);
    if !path.exists() {
        let mut bytes = [0_u8; KEY_BYTES];
        // The thread RNG is a CSPRNG seeded from the operating system.
        rand::fill(&mut bytes[..]);
        let key = ClusterKey::from_random_bytes(&bytes).map_err(Error::Io)?;
        match write_private(&path, format!("{}\n", key.expose()).as_bytes()) {
            Ok(()) => tracing::info!(file = %path.display(), "created a cluster key"),
            // Another process created it meanwhile: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(Error::Io(format!("cannot create {}: {e}", path.display())));
            }
        }
    }
    read_key(&path)?;
    Ok(path)
}

fn read_key(path: &Path) -> Result<ClusterKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Io(format!("cannot read {}: {e}", path.display())))?;
    ClusterKey::parse(&text).map_err(|e| Error::Io(format!("{}: {e}", path.display())))
}

/// Writes a new file readable by its owner only; fails if it exists.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Where one service's TLS files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate authority every client trusts.
    pub ca: PathBuf,
    /// The service's certificate.
    pub cert: PathBuf,
    /// Its private key (mode 0600).
    pub key: PathBuf,
}

/// Makes sure `data_dir/tls` holds a certificate authority and a certificate for each of
/// `services` valid for `hosts`, and returns each service's files. When anything is missing,
/// all of it is made again (the authority's own key is not kept, so it cannot sign anything
/// later).
///
/// # Errors
/// A file cannot be written, or certificate generation failed.
pub fn ensure_tls(data_dir: &Path, services: &[String], hosts: &[String]) -> Result<Vec<TlsFiles>> {
    let dir = data_dir.join(TLS_DIR);
    let files: Vec<TlsFiles> = services
        .iter()
        .map(|name| TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        })
        .collect();
    let complete = files
        .iter()
        .all(|f| f.ca.is_file() && f.cert.is_file() && f.key.is_file());
    if complete {
        return Ok(files);
    }
    let io = |what: &Path, e: &dyn std::fmt::Display| {
        Error::Io(format!("cannot write {}: {e}", what.display()))
    };
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| io(&dir, &e))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, &e))?;
    let tls_error = |e: rcgen::Error| Error::Io(format!("cannot make TLS certificates: {e}"));
    let ca_key = rcgen::KeyPair::generate().map_err(tls_error)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(tls_error)?;
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Stock Bazaar local CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).map_err(tls_error)?;
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).map_err(|e| io(&ca_path, &e))?;
    for (name, file) in services.iter().zip(&files) {
        let key = rcgen::KeyPair::generate().map_err(tls_error)?;
        let mut params = rcgen::CertificateParams::new(hosts.to_vec()).map_err(tls_error)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("bazaar {name}"));
        let cert = params.signed_by(&key, &ca).map_err(tls_error)?;
        std::fs::write(&file.cert, cert.pem()).map_err(|e| io(&file.cert, &e))?;
        write_private(&file.key, key.serialize_pem().as_bytes()).map_err(|e| io(&file.key, &e))?;
    }
    tracing::info!(dir = %dir.display(), "made a private certificate authority and service certificates");
    Ok(files)
}

/// What a process that drives the cluster (up's readiness checks, tests) presents and trusts:
/// the key in `key_file`, and the authority in `ca` when TLS is on.
///
/// # Errors
/// A file cannot be read or is malformed.
pub fn client_auth(key_file: &Path, ca: Option<&Path>) -> Result<ClientAuth> {
    let auth = ClientAuth::none().with_key(Some(read_key(key_file)?));
    match ca {
        None => Ok(auth),
        Some(ca) => {
            let pem = std::fs::read(ca)
                .map_err(|e| Error::Io(format!("cannot read {}: {e}", ca.display())))?;
            auth.trusting_ca_pem(&pem)
                .map_err(|e| Error::Io(format!("{}: {e}", ca.display())))
        }
    }
}

/// What a tool pointed at a running cluster's data directory presents and trusts: the key
/// `up` made there, and the authority in `tls/ca.pem` when the cluster runs on TLS.
///
/// # Errors
/// The key file is missing or malformed; the authority cannot be read.
pub fn client_auth_of(data_dir: &Path) -> Result<ClientAuth> {
    let ca = data_dir.join(TLS_DIR).join("ca.pem");
    client_auth(
        &data_dir.join(KEY_FILE),
        ca.exists().then_some(ca.as_path()),
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_key_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = ensure_key(dir.path()).expect("created");
        let first = std::fs::read_to_string(&path).expect("read");
        assert_eq!(first.trim().len(), 2 * KEY_BYTES);
        assert!(first.trim().bytes().all(|b| b.is_ascii_hexdigit()));
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        ensure_key(dir.path()).expect("again");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), first, "kept");
        let other = tempfile::tempdir().expect("tempdir");
        let second =
            std::fs::read_to_string(ensure_key(other.path()).expect("other")).expect("read");
        assert_ne!(first, second, "random per cluster");
    }

    #[test]
    fn a_damaged_key_file_is_reported_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(KEY_FILE), "short").expect("write");
        assert!(ensure_key(dir.path()).is_err());
    }

    #[test]
    fn tls_files_are_made_once_with_private_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = vec!["catalog".to_owned(), "frontend".to_owned()];
        let hosts = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let files = ensure_tls(dir.path(), &names, &hosts).expect("made");
        assert_eq!(files.len(), 2);
        for f in &files {
            let mode = std::fs::metadata(&f.key)
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{}", f.key.display());
        }
        let ca = std::fs::read(&files[0].ca).expect("ca");
        assert!(client_auth(&ensure_key(dir.path()).expect("key"), Some(&files[0].ca)).is_ok());
        ensure_tls(dir.path(), &names, &hosts).expect("again");
        assert_eq!(std::fs::read(&files[0].ca).expect("ca"), ca, "kept");
    }
}

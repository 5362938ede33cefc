//! Writing signed intended-state documents (`meshguard publish`): the files a
//! source of truth serves, laid out as `DIR/<namespace>/<workload>/<filter>.json`
//! so that any static web server (or `meshguard serve-intended`) serving DIR
//! under `/v1/intended/` answers the sidecar's poll.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ed25519_dalek::SigningKey;
use meshguard_core::integrity::{sign_answer, IntendedDocument};

/// Where `document` is published under `dir`.
pub fn document_path(dir: &Path, document: &IntendedDocument) -> anyhow::Result<PathBuf> {
    let Some((namespace, workload)) = document.workload.split_once('/') else {
        bail!(
            "workload {:?} must be NAMESPACE/WORKLOAD_NAME",
            document.workload
        );
    };
    for part in [namespace, workload, document.filter.as_str()] {
        let plain = !part.is_empty()
            && part.bytes().any(|b| b != b'.')
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !plain {
            bail!("{part:?} must match [A-Za-z0-9._-]+ (and not be `.` or `..`)");
        }
    }
    Ok(dir
        .join(namespace)
        .join(workload)
        .join(format!("{}.json", document.filter)))
}

/// Signs `document` with `key` and writes it atomically (a temporary file,
/// then `rename`: a poll never reads half a document). Returns the path.
pub fn write_document(
    dir: &Path,
    document: &IntendedDocument,
    key_id: &str,
    key: &SigningKey,
) -> anyhow::Result<PathBuf> {
    let path = document_path(dir, document)?;
    let mut bytes = sign_answer(document, key_id, key).map_err(|e| anyhow::anyhow!("{e}"))?;
    bytes.push(b'\n');
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, &bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

//! OCI image layouts (what `scripts/build-oci.sh` writes, what skopeo copies):
//! read and checked against the OCI image-spec rules that matter here, and
//! against Istio's "compat" Wasm image variant (pkg/wasm/imagefetcher.go: one
//! `application/vnd.oci.image.layer.v1.tar+gzip` layer holding `plugin.wasm`).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context as _};
use meshguard_core::canonical::sha256_hex;
use serde_json::Value;

pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A checked image from an OCI layout.
#[derive(Debug, Clone)]
pub struct WasmImage {
    /// Manifest digest, `sha256:<hex>`.
    pub manifest_digest: String,
    /// The raw manifest bytes.
    pub manifest: Vec<u8>,
    /// `org.opencontainers.image.ref.name` of the index entry, if any.
    pub tag: Option<String>,
    /// The bytes of `plugin.wasm` in the layer.
    pub plugin_wasm: Vec<u8>,
}

/// Reads `blobs/sha256/<hex>` of a layout and checks its digest and size.
fn blob(layout: &Path, descriptor: &Value) -> anyhow::Result<Vec<u8>> {
    let digest = descriptor["digest"]
        .as_str()
        .context("descriptor without digest")?;
    let hex = digest
        .strip_prefix("sha256:")
        .with_context(|| format!("digest {digest} is not sha256"))?;
    ensure!(
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "malformed digest {digest}"
    );
    let path = layout.join("blobs/sha256").join(hex);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        sha256_hex(&bytes) == hex,
        "{} does not hash to its name",
        path.display()
    );
    let size = descriptor["size"]
        .as_u64()
        .context("descriptor without size")?;
    ensure!(
        size == bytes.len() as u64,
        "{digest}: descriptor size {size}, blob {} bytes",
        bytes.len()
    );
    Ok(bytes)
}

/// The files of a tar archive (ustar headers), by name.
pub fn tar_files(tar: &[u8]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    let mut offset = 0usize;
    while offset + 512 <= tar.len() {
        let header = &tar[offset..offset + 512];
        if header.iter().all(|b| *b == 0) {
            break;
        }
        let field = |range: std::ops::Range<usize>| {
            let raw = &header[range];
            let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
            String::from_utf8_lossy(&raw[..end]).trim().to_string()
        };
        let name = field(0..100);
        let size = usize::from_str_radix(&field(124..136), 8)
            .with_context(|| format!("tar entry {name}: bad size"))?;
        let kind = header[156];
        let start = offset + 512;
        ensure!(start + size <= tar.len(), "tar entry {name} is truncated");
        if kind == b'0' || kind == 0 {
            files.push((
                name.trim_start_matches("./").to_string(),
                tar[start..start + size].to_vec(),
            ));
        }
        offset = start + size.div_ceil(512) * 512;
    }
    Ok(files)
}

/// Reads the single image of an OCI layout directory and checks it is a
/// valid image (layout version, index, manifest, config and layer blobs with
/// matching digests and sizes) in Istio's compat Wasm variant.
pub fn read_wasm_image(layout: &Path) -> anyhow::Result<WasmImage> {
    let read_json = |name: &str| -> anyhow::Result<Value> {
        let path = layout.join(name);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    };
    let marker = read_json("oci-layout")?;
    ensure!(
        marker["imageLayoutVersion"] == "1.0.0",
        "oci-layout: {marker}"
    );
    let index = read_json("index.json")?;
    ensure!(index["schemaVersion"] == 2, "index.json: schemaVersion");
    if let Some(media_type) = index.get("mediaType") {
        ensure!(
            media_type == INDEX_MEDIA_TYPE,
            "index.json: mediaType {media_type}"
        );
    }
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    ensure!(
        entries.len() == 1,
        "index.json lists {} manifests, expected 1",
        entries.len()
    );
    let entry = &entries[0];
    ensure!(
        entry["mediaType"] == MANIFEST_MEDIA_TYPE,
        "index entry mediaType {}",
        entry["mediaType"]
    );
    let manifest_bytes = blob(layout, entry)?;
    let manifest: Value = serde_json::from_slice(&manifest_bytes)?;
    ensure!(manifest["schemaVersion"] == 2, "manifest schemaVersion");
    ensure!(
        manifest["mediaType"] == MANIFEST_MEDIA_TYPE,
        "manifest mediaType {}",
        manifest["mediaType"]
    );
    ensure!(
        manifest["config"]["mediaType"] == CONFIG_MEDIA_TYPE,
        "config mediaType {}",
        manifest["config"]["mediaType"]
    );
    let config: Value = serde_json::from_slice(&blob(layout, &manifest["config"])?)?;
    for key in ["architecture", "os"] {
        ensure!(config[key].is_string(), "image config without {key}");
    }
    ensure!(config["rootfs"]["type"] == "layers", "image config rootfs");
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    ensure!(
        layers.len() == 1,
        "compat Wasm images have exactly one layer, found {}",
        layers.len()
    );
    ensure!(
        layers[0]["mediaType"] == LAYER_MEDIA_TYPE,
        "layer mediaType {} (Istio's compat variant needs {LAYER_MEDIA_TYPE})",
        layers[0]["mediaType"]
    );
    ensure!(
        manifest["annotations"]["module.wasm.image/variant"] == "compat",
        "the compat variant is announced by the manifest annotation module.wasm.image/variant=compat"
    );
    let gz = blob(layout, &layers[0])?;
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut tar)
        .context("the layer is not gzip")?;
    let diff_id = format!("sha256:{}", sha256_hex(&tar));
    ensure!(
        config["rootfs"]["diff_ids"][0] == diff_id.as_str(),
        "rootfs.diff_ids[0] is not the uncompressed layer digest {diff_id}"
    );
    let files = tar_files(&tar)?;
    let Some((_, plugin_wasm)) = files.iter().find(|(name, _)| name == "plugin.wasm") else {
        bail!(
            "the layer has no plugin.wasm: {:?}",
            files.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
    };
    ensure!(
        plugin_wasm.starts_with(b"\0asm"),
        "plugin.wasm is not a Wasm module"
    );
    Ok(WasmImage {
        manifest_digest: entry["digest"].as_str().unwrap_or_default().to_string(),
        manifest: manifest_bytes,
        tag: entry["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .map(String::from),
        plugin_wasm: plugin_wasm.clone(),
    })
}

/// `dist/oci/<image>` (`make oci` builds one: `meshguard`).
pub fn layout_dir(image: &str) -> PathBuf {
    crate::repo_root().join("dist/oci").join(image)
}

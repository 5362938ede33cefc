//! Helpers shared by the CLI's integration tests (`mod common;` in each): a
//! scratch directory, and the built `meshguard` binary run in a clean
//! environment with its exit status and output captured.

// Each test crate uses only some of these helpers.
#![allow(dead_code)]
// Test code: clippy.toml allows these inside `#[test]` functions only, and these
// helpers are test code too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Variables the CLI reads: removed from each child so the developer's shell
/// cannot change a result.
pub const ENV_VARS: [&str; 8] = [
    "MESHGUARD_AUDIT_KEY",
    "MESHGUARD_MASK_HASH_KEY",
    "CUSTOM_HASH_KEY",
    "MESHGUARD_TRUSTED_KEYS",
    "MESHGUARD_REQUIRE_SIGNATURE",
    "MESHGUARD_INTENDED_VERSION",
    "MESHGUARD_INTENDED_FINGERPRINT",
    "MESHGUARD_ON_DRIFT",
];

/// What a run of the binary left: its exit status and its output, standard
/// output as text (`String`) or as bytes (`Vec<u8>`).
pub struct Output<Stdout = String> {
    pub code: Option<i32>,
    pub stdout: Stdout,
    pub stderr: String,
}

impl Output {
    /// Both streams, for an assertion's message.
    pub fn context(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout, self.stderr)
    }
}

impl Output<Vec<u8>> {
    /// Standard output, which must be UTF-8.
    pub fn stdout(&self) -> String {
        String::from_utf8(self.stdout.clone()).unwrap()
    }

    /// Both streams, for an assertion's message.
    pub fn context(&self) -> String {
        format!(
            "--- stdout\n{}--- stderr\n{}",
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        )
    }

    /// The same output with standard output as text (it must be UTF-8).
    pub fn into_text(self) -> Output {
        Output {
            code: self.code,
            stdout: String::from_utf8(self.stdout).unwrap(),
            stderr: self.stderr,
        }
    }
}

/// A fresh directory per use, removed when dropped, so tests running in
/// parallel never share files.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "meshguard-cli-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// The path of `name` in this directory (which need not exist).
    pub fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }

    /// Writes `contents` to `name` (creating its parent directories) and
    /// returns its path.
    pub fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_string()
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.0.join(name)).unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file of this repository, by its path from the repository's root.
pub fn repo_file(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
        .to_str()
        .unwrap()
        .to_string()
}

/// Runs the binary with `args`, none of [`ENV_VARS`] but those of `env`, and
/// `stdin` on standard input (without it, standard input is empty and closed).
pub fn run(args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Output<Vec<u8>> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meshguard"));
    for var in ENV_VARS {
        command.env_remove(var);
    }
    let mut child = command
        .args(args)
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let (Some(bytes), Some(mut input)) = (stdin, child.stdin.take()) {
        // A command failing before it reads its input closes the pipe: ignore that.
        let _ = input.write_all(bytes);
    }
    let out = child.wait_with_output().unwrap();
    Output {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// [`run`] with text on standard input and standard output read as text.
pub fn meshguard(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    run(args, env, stdin.map(str::as_bytes)).into_text()
}

/// Runs `keygen` for key `id` into `keys` in `dir` and returns the
/// MESHGUARD_TRUSTED_KEYS entry it printed.
pub fn keygen(dir: &TempDir, id: &str) -> String {
    let out = meshguard(
        &["keygen", "--key-id", id, "--out-dir", &dir.path("keys")],
        &[],
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.context());
    out.stdout.trim_end().to_string()
}

/// Writes `config` to a file in a fresh directory and calls `run` with `args`,
/// every `CONFIG` in them replaced by that file's path; returns what `run`
/// returned and the path.
pub fn run_with_config<T>(
    config: &str,
    args: &[&str],
    run: impl FnOnce(&[&str]) -> T,
) -> (T, String) {
    let dir = TempDir::new();
    let path = dir.write("config.json", config);
    let args: Vec<&str> = args
        .iter()
        .map(|a| if *a == "CONFIG" { path.as_str() } else { a })
        .collect();
    (run(&args), path)
}

/// Asserts what case `name` must show: exit status `code`, each of `stdout` in
/// standard output and each of `stderr` in standard error, after `fill` (which
/// puts in what the placeholders stand for). A stream for which nothing but
/// empty text is expected must be empty.
pub fn assert_output(
    name: &str,
    out: &Output,
    code: i32,
    stdout: &[&str],
    stderr: &[&str],
    fill: impl Fn(&str) -> String,
) {
    let context = format!("case {name:?}\n{}", out.context());
    assert_eq!(out.code, Some(code), "{context}");
    for want in stdout {
        assert!(
            out.stdout.contains(&fill(want)),
            "stdout lacks {want:?}\n{context}"
        );
    }
    for want in stderr {
        assert!(
            out.stderr.contains(&fill(want)),
            "stderr lacks {want:?}\n{context}"
        );
    }
    if stdout.iter().all(|want| want.is_empty()) {
        assert_eq!(out.stdout, "", "{context}");
    }
    if stderr.iter().all(|want| want.is_empty()) {
        assert_eq!(out.stderr, "", "{context}");
    }
}

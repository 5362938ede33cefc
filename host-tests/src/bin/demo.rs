//! `make demo`: two real Envoy sidecars, the server one running the meshguard
//! plugin (identity → masking → audit in one module), an audit collector and the reference source
//! of truth. Shows allowed and denied calls, a masked response, an audited
//! call verified with `meshguard audit verify`, and a config drift detected and
//! cleared, with the metrics the server sidecar exports.
//!
//! Every claim it prints is checked: a decision, a masked value, the audit
//! chain, the drift state or a metric that is not what the demo says ends it
//! with one line naming the step and the logs, and exit status 1 (CI runs
//! `make demo`: `.ci/run`). The background services (Envoys, source of truth,
//! collector) write into [`LOG_DIR`], never to the terminal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use meshguard_host_tests::collector::Collector;
use meshguard_host_tests::http::Request;
use meshguard_host_tests::mesh::{default_profiles, Filter, Mesh, AUDIT_KEY};
use meshguard_host_tests::source::{release_key, signed, trusted_key_entry, SourceOfTruth, KEY_ID};
use meshguard_host_tests::upstream::Script;

/// Where the demo's services write their logs (relative to the repository).
const LOG_DIR: &str = "target/demo";
/// The Envoy cluster names the example configs use.
const SOURCE_CLUSTER: &str = "meshguard-intended";
const COLLECTOR_CLUSTER: &str = "audit-collector";
/// The plugin whose config the source of truth names (its drift is shown).
const DRIFT_FILTER: &str = "meshguard";
/// The example config the demo runs, and where it writes the signed copy.
const CONFIG_FILE: &str = "examples/demo/meshguard.json";
const SIGNED_FILE: &str = "meshguard.signed.json";

/// The example config the demo runs.
struct Configs {
    /// Signed by the release key for `default/backend`, serial 1.
    signed: String,
    unsigned: String,
}

/// How the demo deploys meshguard on the server sidecar: the one place that
/// says which modules run, in which order, with which environment (switching
/// the demo to another plugin layout changes this function and
/// [`DEPLOYMENT`]).
fn server_filters(configs: &Configs) -> Vec<Filter> {
    // One plugin, one VM per thread: the combined config. Its audit command
    // hashes the request body, so it is deployed as docs/deploy.md says for
    // body commands: the EnvoyFilter variant (istio-manifests/body-commands/,
    // allow_on_headers_stop_iteration). The release key it trusts and the
    // audit key are proxy-level env (valueFrom: HOST).
    vec![Filter::combined(configs.signed.clone())
        .env(
            "MESHGUARD_TRUSTED_KEYS",
            &trusted_key_entry(KEY_ID, &release_key()),
        )
        .env("MESHGUARD_AUDIT_KEY", AUDIT_KEY)
        .envoyfilter_variant()]
}

/// What [`server_filters`] deploys, as the demo's header says it.
const DEPLOYMENT: [&str; 3] = [
    "  one meshguard plugin (dist/meshguard.wasm), the sections identity -> masking -> audit",
    "  deployed as the EnvoyFilter of istio-manifests/body-commands/, as docs/deploy.md deploys a",
    "  config whose audit commands hash the request body; config: examples/demo/meshguard.json, signed",
];

const IDENTITY: &str = "1. Identity and mTLS policy";
const MASKING: &str = "2. Masking: the caller never sees the raw values";
const AUDIT: &str = "3. Command-hash audit";
const DRIFT: &str = "4. Config drift: intended vs running";
const METRICS: &str = "5. Server sidecar /stats/prometheus (meshguard_*, non-zero)";

fn main() -> ExitCode {
    let root = meshguard_host_tests::repo_root();
    let logs = root.join(LOG_DIR);
    // A bug in the demo itself still ends in one line, not a backtrace.
    std::panic::set_hook(Box::new(move |info| {
        eprintln!(
            "meshguard demo: FAILED (internal error: {}); logs in {LOG_DIR}/",
            one_line(&info.to_string())
        );
    }));
    let outcome = tokio::runtime::Runtime::new()
        .context("starting the async runtime")
        .map_err(|e| Failure::at("setup", e))
        .and_then(|rt| rt.block_on(run(&root, &logs)));
    match outcome {
        Ok(()) => {
            println!("\nmeshguard demo: every decision, masked value, audit chain, drift state and metric above was checked.");
            println!("logs: {LOG_DIR}/ ({})", log_files(&logs));
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!(
                "\nmeshguard demo: FAILED at \"{}\": {}; logs in {LOG_DIR}/ ({})",
                failure.step,
                one_line(&format!("{:#}", failure.error)),
                log_files(&logs)
            );
            ExitCode::FAILURE
        }
    }
}

/// The step that failed and why.
struct Failure {
    step: &'static str,
    error: anyhow::Error,
}

impl Failure {
    fn at(step: &'static str, error: anyhow::Error) -> Self {
        Self { step, error }
    }
}

/// Runs the step `title` (printing its heading), naming it if it fails.
async fn section<T>(
    title: &'static str,
    body: impl std::future::Future<Output = anyhow::Result<T>>,
) -> Result<T, Failure> {
    println!("\n=== {title} ===\n");
    body.await.map_err(|e| Failure::at(title, e))
}

async fn run(root: &Path, logs: &Path) -> Result<(), Failure> {
    let demo = Demo::start(root, logs)
        .await
        .map_err(|e| Failure::at("starting the sidecars", e))?;
    section(IDENTITY, demo.identity()).await?;
    section(MASKING, demo.masking()).await?;
    section(AUDIT, demo.audit()).await?;
    section(DRIFT, demo.drift()).await?;
    section(METRICS, demo.metrics()).await?;
    Ok(())
}

/// The running mesh and what the demo keeps of its own calls.
struct Demo {
    logs: PathBuf,
    configs: Configs,
    truth: SourceOfTruth,
    collector: Collector,
    mesh: Mesh,
    /// Calls the identity filter allowed, by the demo's count.
    allowed: std::cell::Cell<u64>,
    /// Calls it denied, by reason.
    denied: std::cell::RefCell<BTreeMap<String, u64>>,
}

impl Demo {
    async fn start(root: &Path, logs: &Path) -> anyhow::Result<Self> {
        if logs.exists() {
            std::fs::remove_dir_all(logs)
                .with_context(|| format!("clearing {}", logs.display()))?;
        }
        std::fs::create_dir_all(logs).with_context(|| format!("creating {}", logs.display()))?;
        let read =
            |path: &str| std::fs::read_to_string(root.join(path)).with_context(|| path.to_string());
        let unsigned = read(CONFIG_FILE)?;
        let configs = Configs {
            signed: signed(DRIFT_FILTER, 1, &unsigned),
            unsigned,
        };
        // What the sidecar runs, for `meshguard audit verify-header --config`.
        std::fs::write(logs.join(SIGNED_FILE), &configs.signed)?;
        // The source of truth serves a signed document naming the running
        // config as the one intended for default/backend.
        let truth = SourceOfTruth::start_logging_to(&logs.join("source-of-truth.log"))?;
        truth.publish_config(DRIFT_FILTER, &configs.signed)?;
        let collector = Collector::start_storing_to(&logs.join("collector.ndjson")).await?;

        println!("meshguard demo");
        println!("  client sidecar --mTLS (SPIFFE certs)--> server sidecar [meshguard: identity -> masking -> audit] --> upstream");
        for line in DEPLOYMENT {
            println!("{line}");
        }
        let mut mesh = Mesh::builder();
        for filter in server_filters(&configs) {
            mesh = mesh.filter(filter);
        }
        let mesh = mesh
            .server_cluster(SOURCE_CLUSTER, truth.addr())
            .server_cluster(COLLECTOR_CLUSTER, collector.addr())
            .keep_files_in(logs)
            .start()
            .await?;
        // A fixed answer unless a section scripts one: only section 2's
        // response carries values to mask, so the metrics count exactly those.
        mesh.upstream()
            .set_default(Some(Script::json(&serde_json::json!({"ok": true}))));
        Ok(Self {
            logs: logs.to_path_buf(),
            configs,
            truth,
            collector,
            mesh,
            allowed: std::cell::Cell::new(0),
            denied: std::cell::RefCell::new(BTreeMap::new()),
        })
    }

    async fn identity(&self) -> anyhow::Result<()> {
        let caller_of = |route: &str| {
            default_profiles()
                .into_iter()
                .find(|p| p.route == route)
                .map(|p| match p.identity {
                    Some(id) if p.max_tls == "TLSv1_2" => format!("{id} (TLS 1.2)"),
                    Some(id) => id.to_string(),
                    None => "plaintext, no certificate".to_string(),
                })
                .unwrap_or_default()
        };
        // (caller, method, path, the deny reason examples/demo/meshguard.json gives, if any)
        let calls = [
            ("frontend", "GET", "/api/orders", None),
            ("frontend", "POST", "/api/orders/42", None),
            (
                "frontend",
                "DELETE",
                "/api/orders/42",
                Some("denied_by_rule"),
            ),
            ("unknown", "GET", "/api/orders", Some("no_matching_rule")),
            ("plaintext", "GET", "/api/orders", Some("mtls_required")),
            ("plaintext", "GET", "/healthz", None),
            (
                "frontend-tls12",
                "GET",
                "/admin/users",
                Some("tls_version_too_low"),
            ),
            ("frontend", "GET", "/admin/users", None),
            ("batch", "POST", "/batch/nightly/run", None),
        ];
        println!("{:<58} {:<26} result", "caller", "request");
        for (route, method, path, want_denied) in calls {
            let resp = self
                .send(route, Request::new(method, path))
                .await
                .with_context(|| format!("{method} {path} as {route}"))?;
            let reason = resp.header("x-meshguard-deny-reason");
            let result = match (resp.status, reason) {
                (200, _) => "200 allowed".to_string(),
                (status, reason) => format!("{status} denied: {}", reason.unwrap_or("?")),
            };
            println!(
                "{:<58} {:<26} {result}",
                caller_of(route),
                format!("{method} {path}")
            );
            match want_denied {
                None => ensure!(
                    resp.status == 200,
                    "{method} {path} as {route}: the policy allows it, the sidecar answered {result}"
                ),
                Some(want) => ensure!(
                    resp.status == 403 && reason == Some(want),
                    "{method} {path} as {route}: the policy denies it ({want}), the sidecar answered {result}"
                ),
            }
        }
        Ok(())
    }

    async fn masking(&self) -> anyhow::Result<()> {
        const CARD: &str = "4111111111111111";
        const CARD_LAST4: &str = "************1111";
        const EMAIL: &str = "ann@example.com";
        const SSN: &str = "078-05-1120";
        let order = serde_json::json!({
            "order": 42, "card_number": CARD, "email": EMAIL, "note": format!("ssn {SSN}")
        });
        self.mesh.upstream().script("order", Script::json(&order));
        println!("the upstream answers GET /api/orders/42 with: {order}");
        // (caller, why, values that must be gone, values that must remain)
        let callers: [(&str, &str, &[&str], &[&str]); 2] = [
            (
                "frontend",
                "rule pii masks e-mails and SSNs, rule card-last4 keeps a card's last 4 digits",
                &[CARD, EMAIL, SSN],
                &[CARD_LAST4],
            ),
            (
                "auditor",
                "exempt from rule pii (except_principals), not from card-last4",
                &[CARD],
                &[CARD_LAST4, EMAIL, SSN],
            ),
        ];
        for (route, why, gone, kept) in callers {
            let resp = self
                .send(route, Request::new("GET", "/api/orders/42").script("order"))
                .await
                .with_context(|| format!("GET /api/orders/42 as {route}"))?;
            let body = resp.text();
            println!("\n{route:<9} gets: {body}");
            println!("{:<15}({why})", "");
            ensure!(
                resp.status == 200,
                "{route}: answered {}, not 200",
                resp.status
            );
            if let Some(raw) = gone.iter().find(|v| body.contains(*v)) {
                bail!("{route} received the raw value {raw:?}");
            }
            if let Some(missing) = kept.iter().find(|v| !body.contains(*v)) {
                bail!("{route} should receive {missing:?}, got {body}");
            }
        }
        Ok(())
    }

    async fn audit(&self) -> anyhow::Result<()> {
        let query = r#"{"sql": "SELECT * FROM orders WHERE id = 42"}"#;
        println!("POST /api/query as frontend, body {query}");
        println!("the audit command \"sql\" hashes the method, the path and the body's /sql (examples/demo/meshguard.json)\n");
        self.mesh.upstream().take();
        let resp = self
            .send(
                "frontend",
                Request::new("POST", "/api/query")
                    .header("content-type", "application/json")
                    .body(query),
            )
            .await?;
        ensure!(
            resp.status == 200,
            "POST /api/query answered {}: {}",
            resp.status,
            one_line(&resp.text())
        );
        let received = self.mesh.upstream().take_one().await?;
        let command_hash = received
            .header("x-meshguard-command-sha256")
            .context("the upstream received no x-meshguard-command-sha256")?;
        let stamp = received
            .header("x-meshguard-audit")
            .context("the upstream received no x-meshguard-audit")?;
        let audit_id = resp
            .header("x-meshguard-audit-id")
            .context("the caller received no x-meshguard-audit-id")?;
        ensure!(
            received.body == query.as_bytes(),
            "the upstream received the body {:?}, not the one sent",
            received.text()
        );
        println!("upstream received:  x-meshguard-command-sha256: {command_hash}");
        println!("                    x-meshguard-audit: {stamp}");
        println!("caller received:    x-meshguard-audit-id: {audit_id}");

        // What the upstream can check before it executes the query.
        let body_file = self.logs.join("query-body.json");
        std::fs::write(&body_file, &received.body)?;
        println!(
            "\n$ meshguard audit verify-header \"$X_MESHGUARD_AUDIT\" --key demo=<key> \\\n    \
             --config {LOG_DIR}/{SIGNED_FILE} --method POST --path /api/query --body-file {LOG_DIR}/query-body.json"
        );
        run_meshguard(
            &[
                "audit",
                "verify-header",
                stamp,
                "--key",
                &format!("demo={AUDIT_KEY}"),
                "--config",
                &self.logs.join(SIGNED_FILE).display().to_string(),
                "--method",
                "POST",
                "--path",
                "/api/query",
                "--body-file",
                &body_file.display().to_string(),
            ],
            "command hash: matches",
        )?;

        // The records the sidecar logged: one chain, verified.
        let records = wait_for(|| {
            let lines: Vec<String> = self
                .mesh
                .server
                .log()
                .lines()
                .filter_map(|l| {
                    l.find("meshguard-audit-record: ")
                        .map(|i| l[i..].to_string())
                })
                .collect();
            lines
                .iter()
                .any(|l| l.contains(r#""command":"sql""#))
                .then_some(lines)
        })
        .await
        .context("the sql command's audit record never appeared in the server sidecar's log")?;
        let record_file = self.logs.join("audit-records.log");
        std::fs::write(&record_file, records.join("\n") + "\n")?;
        println!("\n$ meshguard audit verify {LOG_DIR}/audit-records.log --key demo=<key>");
        run_meshguard(
            &[
                "audit",
                "verify",
                &record_file.display().to_string(),
                "--key",
                &format!("demo={AUDIT_KEY}"),
            ],
            " 0 broken",
        )?;
        ensure!(
            records
                .last()
                .is_some_and(|r| r.contains(r#""command":"sql""#)),
            "the last audit record is not the sql command's"
        );
        ensure!(
            records.len() as u64 == self.allowed.get(),
            "{} records for {} requests the identity filter let through",
            records.len(),
            self.allowed.get()
        );
        println!(
            "(a record for each of the {} requests the identity filter let through, the sql command's last)",
            records.len()
        );
        // The same records reach the collector (as bare NDJSON lines).
        let logged: Vec<&str> = records
            .iter()
            .filter_map(|r| r.strip_prefix("meshguard-audit-record: "))
            .collect();
        let missing = || {
            let received = self.collector.lines();
            logged
                .iter()
                .filter(|r| !received.iter().any(|c| c == *r))
                .count()
        };
        wait_for(|| (missing() == 0).then_some(()))
            .await
            .with_context(|| {
                format!(
                    "{} of the {} logged records never reached the collector",
                    missing(),
                    logged.len()
                )
            })?;
        println!(
            "the collector received the same {} records ({LOG_DIR}/collector.ndjson)",
            logged.len()
        );
        Ok(())
    }

    async fn drift(&self) -> anyhow::Result<()> {
        let drift = format!(r#"meshguard_config_drift{{filter="{DRIFT_FILTER}"}}"#);
        let unknown = format!(r#"meshguard_config_unknown{{filter="{DRIFT_FILTER}"}}"#);
        let server = &self.mesh.server;
        for sample in [&unknown, &drift] {
            server
                .wait_for_metric(sample, Duration::from_secs(5), |v| v == Some(0))
                .await
                .context("the running config should be the intended one")?;
        }
        println!("the source of truth intends the running config (demo-1): drift = 0");
        self.truth.publish_config(
            DRIFT_FILTER,
            &signed(
                DRIFT_FILTER,
                2,
                &self
                    .configs
                    .unsigned
                    .replace("\"demo-1\"", "\"demo-2\"")
                    .replace("\"keep_last\": 4", "\"keep_last\": 2"),
            ),
        )?;
        println!(
            "publishing the demo-2 config as the intended one (the sidecar still runs demo-1; demo-2 keeps a card's last 2 digits)..."
        );
        self.show_drift(&drift, 1, "config drift detected").await?;
        let differing = "sections differing from the intended config: masking";
        server
            .wait_for_log(differing)
            .await
            .context("the masking section was never named as the one that differs")?;
        for (section, value) in [("identity", 0), ("masking", 1), ("audit", 0)] {
            let gauge = format!(
                r#"meshguard_config_section_drift{{filter="{DRIFT_FILTER}",section="{section}"}}"#
            );
            server
                .wait_for_metric(&gauge, Duration::from_secs(5), |v| v == Some(value))
                .await
                .with_context(|| format!("{gauge} should be {value}"))?;
        }
        println!(
            "  section drift: masking = 1, identity = 0, audit = 0    log: {}",
            self.last_line(differing)
        );
        self.truth
            .publish_config(DRIFT_FILTER, &self.configs.signed)?;
        println!("publishing the demo-1 config as the intended one again...");
        self.show_drift(&drift, 0, "config drift cleared").await
    }

    /// Waits until the drift gauge reads `value` and the sidecar logged
    /// `event`, and shows both.
    async fn show_drift(&self, drift: &str, value: u64, event: &str) -> anyhow::Result<()> {
        self.mesh
            .server
            .wait_for_metric(drift, Duration::from_secs(5), |v| v == Some(value))
            .await
            .with_context(|| format!("the drift gauge never read {value}"))?;
        self.mesh
            .server
            .wait_for_log(event)
            .await
            .with_context(|| format!("{event:?} was never logged"))?;
        println!("  drift = {value}    log: {}", self.last_line(event));
        Ok(())
    }

    async fn metrics(&self) -> anyhow::Result<()> {
        let text = self.mesh.server.prometheus().await?;
        let samples = Sample::parse_all(&text);
        for s in samples.iter().filter(|s| s.value != 0) {
            println!("  {}", s.line);
        }
        let unknown: Vec<&str> = samples
            .iter()
            .filter(|s| s.name == "meshguard_config_unknown" && s.value == 1)
            .filter_map(|s| s.label("filter"))
            .collect();
        ensure!(
            !unknown.contains(&DRIFT_FILTER),
            "meshguard_config_unknown{{filter=\"{DRIFT_FILTER}\"}} is 1: the source of truth names its config"
        );
        if !unknown.is_empty() {
            println!(
                "\n(config_unknown is 1 for {}: the source of truth here names only the {DRIFT_FILTER} config)",
                unknown.join(" and ")
            );
        }
        // What the sections above claim, as the sidecar counted it.
        let sum = |name: &str, labels: &[(&str, &str)]| -> u64 {
            samples
                .iter()
                .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
                .map(|s| s.value)
                .sum()
        };
        let identity = "meshguard_identity_requests_total";
        let allowed = sum(identity, &[("decision", "allowed")]);
        ensure!(
            allowed == self.allowed.get(),
            "{identity}{{decision=\"allowed\"}} is {allowed}, the demo made {} allowed calls",
            self.allowed.get()
        );
        for (reason, calls) in self.denied.borrow().iter() {
            let counted = sum(identity, &[("decision", "denied"), ("reason", reason)]);
            ensure!(
                counted == *calls,
                "{identity}{{decision=\"denied\",reason=\"{reason}\"}} is {counted}, the demo saw {calls}"
            );
        }
        // Section 2: frontend's e-mail and SSN (pii), both callers' card (card-last4).
        for (rule, masked) in [("pii", 2), ("card-last4", 2)] {
            let name = "meshguard_masking_fields_total";
            let counted = sum(name, &[("rule", rule), ("direction", "response")]);
            ensure!(
                counted == masked,
                "{name}{{rule=\"{rule}\",direction=\"response\"}} is {counted}, section 2 masked {masked} values"
            );
        }
        let at_least_one: [(&str, &[(&str, &str)]); 2] = [
            ("meshguard_audit_records_total", &[("result", "emitted")]),
            ("meshguard_audit_records_total", &[("result", "delivered")]),
        ];
        for (name, labels) in at_least_one {
            ensure!(
                sum(name, labels) >= 1,
                "{name}{labels:?} is missing or 0 in /stats/prometheus"
            );
        }
        for (name, labels) in [
            (
                "meshguard_config_loads_total",
                &[("filter", DRIFT_FILTER), ("result", "accepted")][..],
            ),
            (
                "meshguard_config_info",
                &[("filter", DRIFT_FILTER), ("version", "demo-1")],
            ),
        ] {
            ensure!(
                sum(name, labels) >= 1,
                "{name}{labels:?} is missing or 0 in /stats/prometheus"
            );
        }
        for (name, labels) in [
            ("meshguard_config_drift", &[("filter", DRIFT_FILTER)][..]),
            (
                "meshguard_config_section_drift",
                &[("filter", DRIFT_FILTER), ("section", "identity")],
            ),
            (
                "meshguard_config_section_drift",
                &[("filter", DRIFT_FILTER), ("section", "masking")],
            ),
            (
                "meshguard_config_section_drift",
                &[("filter", DRIFT_FILTER), ("section", "audit")],
            ),
            ("meshguard_audit_records_total", &[("result", "dropped")]),
        ] {
            let exported = samples
                .iter()
                .any(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)));
            ensure!(exported, "{name}{labels:?} is missing in /stats/prometheus");
            ensure!(
                sum(name, labels) == 0,
                "{name}{labels:?} should be 0 in /stats/prometheus"
            );
        }
        Ok(())
    }

    /// Sends through the client sidecar and counts the identity filter's
    /// decision (a 403 with a deny reason is a denial).
    async fn send(
        &self,
        route: &str,
        request: Request,
    ) -> anyhow::Result<meshguard_host_tests::http::Response> {
        let resp = self.mesh.send_as(route, request).await?;
        match (resp.status, resp.header("x-meshguard-deny-reason")) {
            (403, Some(reason)) => {
                *self.denied.borrow_mut().entry(reason.into()).or_default() += 1;
            }
            _ => self.allowed.set(self.allowed.get() + 1),
        }
        Ok(resp)
    }

    fn last_line(&self, needle: &str) -> String {
        self.mesh
            .server
            .log()
            .lines()
            .rev()
            .find_map(|l| l.find(needle).map(|i| l[i..].to_string()))
            .unwrap_or_default()
    }
}

/// One Prometheus sample of the scrape.
struct Sample {
    line: String,
    name: String,
    labels: Vec<(String, String)>,
    value: u64,
}

impl Sample {
    /// The `meshguard_*` samples of a `/stats/prometheus` text (label values
    /// are from fixed sets or the config: no quotes or commas inside).
    fn parse_all(text: &str) -> Vec<Sample> {
        text.lines()
            .filter(|l| l.starts_with("meshguard_"))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                let labels = labels
                    .split(',')
                    .filter_map(|pair| {
                        let (k, v) = pair.split_once('=')?;
                        Some((k.to_string(), v.trim_matches('"').to_string()))
                    })
                    .collect();
                Some(Sample {
                    line: line.to_string(),
                    name: name.to_string(),
                    labels,
                    value: value.parse().ok()?,
                })
            })
            .collect()
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Runs the workspace's `meshguard` CLI (what users run) from the
/// repository and shows its output, which must say `verdict`, with exit 0.
fn run_meshguard(args: &[&str], verdict: &str) -> anyhow::Result<()> {
    let cli = meshguard_host_tests::meshguard_cli();
    let out = std::process::Command::new(&cli)
        .args(args)
        .current_dir(meshguard_host_tests::repo_root())
        // The records and header are checked with the key given, nothing else.
        .env_remove("MESHGUARD_AUDIT_KEY")
        .output()
        .with_context(|| format!("running {}", cli.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    ensure!(
        out.status.success() && stdout.contains(verdict),
        "meshguard {} exited {:?}: {}",
        args.iter().take(2).copied().collect::<Vec<_>>().join(" "),
        out.status.code(),
        one_line(&format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    );
    Ok(())
}

/// The first line of a message, for the one-line failure report (the full
/// logs are in [`LOG_DIR`]).
fn one_line(text: &str) -> String {
    let first = text.lines().next().unwrap_or_default();
    let first = first.trim_end_matches(|c: char| c == ':' || c.is_whitespace());
    let first = first.strip_suffix("; log").unwrap_or(first);
    const MAX: usize = 300;
    match first.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &first[..cut]),
        None => first.to_string(),
    }
}

/// The files in the log directory, by name.
fn log_files(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log") || n.ends_with(".ndjson"))
        .collect();
    names.sort();
    names.join(", ")
}

async fn wait_for<T>(mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

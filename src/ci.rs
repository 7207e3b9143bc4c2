//! `robustd gate`: the client CI pipelines run. It sends a model (or names a stored one) and data
//! to a server, waits for the evaluation with a progress line, prints a summary, writes JUnit XML
//! and Markdown, and exits 0 when the gate passes, 1 when it fails, 2 on an error.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// Exit codes.
pub const PASS: u8 = 0;
pub const FAIL: u8 = 1;
pub const ERROR: u8 = 2;

#[derive(Debug, clap::Args)]
pub struct GateArgs {
    /// The robustd server.
    #[arg(long, env = "ROBUSTD_SERVER", default_value = "http://127.0.0.1:8000")]
    pub server: String,
    /// Admin token, sent as `Authorization: Bearer` (needed to upload a model).
    #[arg(long, env = "ROBUSTD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The model's name on the server (with --model-file: the name to upload it as).
    #[arg(long)]
    pub model: String,
    /// A TorchScript file to upload first, with --card.
    #[arg(long, requires = "card")]
    pub model_file: Option<PathBuf>,
    /// The model card (JSON) of --model-file.
    #[arg(long)]
    pub card: Option<PathBuf>,
    /// A data set stored on the server (default: the model card's `dataset`).
    #[arg(long, conflicts_with = "data")]
    pub dataset: Option<String>,
    /// A safetensors file with `x` and `y` to upload and evaluate on.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// First sample of the data set.
    #[arg(long)]
    pub start: Option<usize>,
    /// How many samples, at most.
    #[arg(long)]
    pub limit: Option<usize>,
    /// fgsm, pgd, apgd or noise.
    #[arg(long, default_value = "apgd")]
    pub attack: String,
    /// The radius, or a comma-separated list for a sweep (the gate judges the largest).
    #[arg(long, value_delimiter = ',', required = true)]
    pub eps: Vec<f64>,
    /// linf or l2.
    #[arg(long)]
    pub norm: Option<String>,
    #[arg(long)]
    pub steps: Option<u32>,
    #[arg(long)]
    pub step_size: Option<f64>,
    #[arg(long)]
    pub restarts: Option<u32>,
    /// ce, margin, dlr, bce or mse.
    #[arg(long)]
    pub loss: Option<String>,
    /// accuracy or loss.
    #[arg(long)]
    pub objective: Option<String>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Further attack parameters as JSON, merged over the flags (e.g. an `attacks` ensemble).
    #[arg(long)]
    pub parameters: Option<String>,
    /// Also run the sanity checks that cost extra attack runs.
    #[arg(long)]
    pub thorough: bool,
    /// Samples per batch on the server.
    #[arg(long)]
    pub chunk_size: Option<usize>,
    /// Gate: robust accuracy must be at least this (a share, 0 to 1).
    #[arg(long)]
    pub min_robust_accuracy: Option<f64>,
    /// Gate: compare the lower 95% bound, not the point estimate.
    #[arg(long)]
    pub on_lower_bound: bool,
    /// Gate: mean robust loss must be at most this.
    #[arg(long)]
    pub max_robust_loss: Option<f64>,
    /// Gate: clean minus robust accuracy must be at most this.
    #[arg(long)]
    pub max_accuracy_drop: Option<f64>,
    /// Gate: a report file written by --report (or an evaluation id) to compare with.
    #[arg(long)]
    pub baseline: Option<String>,
    /// Gate: how far robust accuracy may fall below the baseline's.
    #[arg(long, default_value_t = 0.0)]
    pub max_regression: f64,
    /// Do not fail on failed sanity checks.
    #[arg(long)]
    pub allow_failed_checks: bool,
    /// Fail on sanity checks that warn.
    #[arg(long)]
    pub fail_on_warnings: bool,
    /// Write JUnit XML here.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Write a Markdown summary here (e.g. "$GITHUB_STEP_SUMMARY").
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Write the full report (JSON) here; a later run can use it as --baseline.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout_s: u64,
}

/// Runs the gate; the exit code says how it went.
pub fn run(args: GateArgs) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("robustd gate: error: {e}");
            return ERROR;
        }
    };
    match runtime.block_on(gate(&args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("robustd gate: error: {e:#}");
            ERROR
        }
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let builder = self.http.request(method, url);
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends and returns the status and JSON body; an error status becomes an error with the
    /// server's message.
    async fn send(&self, builder: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let response = builder
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{} unreachable: {e}", self.base))?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await?;
        let mut body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 {
            let message = body["error"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or(body.to_string());
            anyhow::bail!("the server answered {status}: {message}");
        }
        if let (Some(location), Value::Object(map)) = (location, &mut body) {
            map.insert("location".to_owned(), Value::String(location));
        }
        Ok((status, body))
    }
}

async fn gate(args: &GateArgs) -> anyhow::Result<u8> {
    let client = Client {
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?,
        base: args.server.trim_end_matches('/').to_owned(),
        token: args.token.clone(),
    };
    let parameters = parameters(args).await?;

    if let (Some(file), Some(card)) = (&args.model_file, &args.card) {
        let card_text = tokio::fs::read_to_string(card)
            .await
            .map_err(|e| anyhow::anyhow!("--card {}: {e}", card.display()))?;
        let mut card_json: Value = serde_json::from_str(&card_text)
            .map_err(|e| anyhow::anyhow!("--card {}: not JSON: {e}", card.display()))?;
        card_json["name"] = Value::String(args.model.clone());
        let bytes = tokio::fs::read(file)
            .await
            .map_err(|e| anyhow::anyhow!("--model-file {}: {e}", file.display()))?;
        eprintln!("uploading {} as model {:?}", file.display(), args.model);
        client
            .send(
                client
                    .request(
                        reqwest::Method::PUT,
                        &format!("/v2/repository/models/{}", args.model),
                    )
                    .header("Model-Card", card_json.to_string())
                    .body(bytes),
            )
            .await?;
    }

    let dataset = match (&args.data, &args.dataset) {
        (Some(path), _) => {
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|e| anyhow::anyhow!("--data {}: {e}", path.display()))?;
            let name = format!("gate-{}", &hex::encode(Sha256::digest(&bytes))[..16]);
            eprintln!("uploading {} as data set {name:?}", path.display());
            client
                .send(
                    client
                        .request(reqwest::Method::PUT, &format!("/v2/datasets/{name}"))
                        .header("content-type", "application/octet-stream")
                        .body(bytes),
                )
                .await?;
            name
        }
        (None, Some(name)) => name.clone(),
        (None, None) => {
            let (_, meta) = client
                .send(client.request(reqwest::Method::GET, &format!("/v2/models/{}", args.model)))
                .await?;
            meta["card"]["dataset"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--dataset or --data: required, model {:?} names no data set in its card",
                        args.model
                    )
                })?
        }
    };

    let mut request = json!({
        "model": args.model,
        "dataset": dataset,
        "parameters": parameters,
    });
    for (key, value) in [
        ("start", args.start),
        ("limit", args.limit),
        ("chunk_size", args.chunk_size),
    ] {
        if let Some(v) = value {
            request[key] = json!(v);
        }
    }
    let (_, job) = client
        .send(
            client
                .request(reqwest::Method::POST, "/v2/evaluations")
                .json(&request),
        )
        .await?;
    let location = job["location"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| job["links"]["self"].as_str().map(str::to_owned))
        .ok_or_else(|| anyhow::anyhow!("the server gave no Location for the evaluation"))?;
    let id = job["id"].as_str().unwrap_or_default().to_owned();
    eprintln!("evaluation {id} queued: {}{location}", client.base);

    let report = wait(&client, &location, args, &id).await?;
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .map_err(|e| anyhow::anyhow!("--report {}: {e}", path.display()))?;
    }
    let summary = Summary::of(&report, &args.model, &id);
    print!("{}", summary.table());
    if let Some(path) = &args.junit {
        std::fs::write(path, summary.junit())
            .map_err(|e| anyhow::anyhow!("--junit {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        // Appends, as CI step summaries expect.
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("--markdown {}: {e}", path.display()))?;
        file.write_all(summary.markdown().as_bytes())?;
    }
    Ok(if summary.passed { PASS } else { FAIL })
}

/// The evaluation's `parameters`: attack flags, the JSON of --parameters over them, the gate.
async fn parameters(args: &GateArgs) -> anyhow::Result<Value> {
    let mut p = Map::new();
    p.insert("attack".to_owned(), json!(args.attack));
    p.insert(
        "eps".to_owned(),
        if args.eps.len() == 1 {
            json!(args.eps[0])
        } else {
            json!(args.eps)
        },
    );
    let flags = [
        ("norm", args.norm.as_ref().map(|v| json!(v))),
        ("steps", args.steps.map(|v| json!(v))),
        ("step_size", args.step_size.map(|v| json!(v))),
        ("restarts", args.restarts.map(|v| json!(v))),
        ("loss", args.loss.as_ref().map(|v| json!(v))),
        ("objective", args.objective.as_ref().map(|v| json!(v))),
        ("seed", args.seed.map(|v| json!(v))),
    ];
    for (key, value) in flags {
        if let Some(value) = value {
            p.insert(key.to_owned(), value);
        }
    }
    if let Some(extra) = &args.parameters {
        let extra: Map<String, Value> = serde_json::from_str(extra)
            .map_err(|e| anyhow::anyhow!("--parameters: must be a JSON object: {e}"))?;
        if extra.contains_key("attacks") {
            // An ensemble replaces the single attack's flags; eps stays (it applies to all).
            for key in ["attack", "norm", "steps", "step_size", "restarts", "loss"] {
                p.remove(key);
            }
        }
        p.extend(extra);
    }
    if args.thorough {
        p.insert("thorough".to_owned(), json!(true));
    }
    let mut gate = Map::new();
    let rules = [
        ("min_robust_accuracy", args.min_robust_accuracy),
        ("max_robust_loss", args.max_robust_loss),
        ("max_accuracy_drop", args.max_accuracy_drop),
    ];
    for (key, value) in rules {
        if let Some(v) = value {
            gate.insert(key.to_owned(), json!(v));
        }
    }
    if args.on_lower_bound {
        gate.insert("on_lower_bound".to_owned(), json!(true));
    }
    if let Some(baseline) = &args.baseline {
        let value = match tokio::fs::read_to_string(baseline).await {
            Ok(text) => serde_json::from_str::<Value>(&text)
                .map_err(|e| anyhow::anyhow!("--baseline {baseline}: not a JSON report: {e}"))?,
            // Not a file: an evaluation id on the server.
            Err(_) if !baseline.contains('/') && !baseline.ends_with(".json") => {
                json!(baseline)
            }
            Err(e) => anyhow::bail!("--baseline {baseline}: {e}"),
        };
        gate.insert("baseline".to_owned(), value);
        gate.insert("max_regression".to_owned(), json!(args.max_regression));
    }
    gate.insert(
        "fail_on_failed_checks".to_owned(),
        json!(!args.allow_failed_checks),
    );
    gate.insert("fail_on_warnings".to_owned(), json!(args.fail_on_warnings));
    p.insert("gate".to_owned(), Value::Object(gate));
    Ok(Value::Object(p))
}

/// Polls the job until it ends, with a progress line on stderr; returns the report.
async fn wait(client: &Client, location: &str, args: &GateArgs, id: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let tty = std::io::stderr().is_terminal();
    let mut last_line = String::new();
    let mut last_print = Instant::now() - Duration::from_secs(60);
    loop {
        let (_, job) = client
            .send(client.request(reqwest::Method::GET, location))
            .await?;
        let status = job["status"].as_str().unwrap_or("unknown").to_owned();
        let (done, total) = (
            job["done"].as_i64().unwrap_or(0),
            job["total"].as_i64().unwrap_or(0),
        );
        let so_far = job["robust_accuracy_so_far"]
            .as_f64()
            .map(|a| format!(", robust accuracy so far {:.2}%", 100.0 * a))
            .unwrap_or_default();
        let line = format!("{} {status}: {done}/{total} samples{so_far}", args.model);
        if line != last_line
            && (tty || last_print.elapsed() >= Duration::from_secs(5) || done == total)
        {
            if tty {
                eprint!("\r\x1b[2K{line}");
            } else {
                eprintln!("{line}");
            }
            last_line = line;
            last_print = Instant::now();
        }
        match status.as_str() {
            "succeeded" => {
                if tty {
                    eprintln!();
                }
                return job
                    .get("report")
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("evaluation {id} succeeded without a report"));
            }
            "failed" | "cancelled" => {
                if tty {
                    eprintln!();
                }
                anyhow::bail!(
                    "evaluation {id} {status}: {}",
                    job["error"].as_str().unwrap_or("no reason given")
                );
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "evaluation {id} did not finish within {} s (--timeout-s); it keeps running on the server",
                args.timeout_s
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the outputs show, read from the report.
struct Summary {
    model: String,
    id: String,
    passed: bool,
    figures: Vec<(String, String)>,
    /// (rule, passed, message)
    rules: Vec<(String, bool, String)>,
    /// (name, status, message)
    checks: Vec<(String, String, String)>,
    seconds: f64,
}

fn pct(p: &Value) -> String {
    match (
        p["value"].as_f64(),
        p["ci95"][0].as_f64(),
        p["ci95"][1].as_f64(),
    ) {
        (Some(v), Some(lo), Some(hi)) => {
            format!("{:.2}% [{:.2}%, {:.2}%]", 100.0 * v, 100.0 * lo, 100.0 * hi)
        }
        _ => "n/a".to_owned(),
    }
}

impl Summary {
    fn of(report: &Value, model: &str, id: &str) -> Self {
        let s = &report["summary"];
        let attacks: Vec<String> = report["plan"]["attacks"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|a| {
                        format!(
                            "{} {} eps={}",
                            a["method"].as_str().unwrap_or("?"),
                            a["norm"].as_str().unwrap_or("?"),
                            a["eps"]
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut figures = vec![
            ("attack".to_owned(), attacks.join(" + ")),
            ("samples".to_owned(), s["n"].to_string()),
            ("clean accuracy".to_owned(), pct(&s["clean_accuracy"])),
            ("robust accuracy".to_owned(), pct(&s["robust_accuracy"])),
            (
                "mean clean / robust loss".to_owned(),
                format!(
                    "{:.4} / {:.4}",
                    s["mean_clean_loss"].as_f64().unwrap_or(f64::NAN),
                    s["mean_robust_loss"].as_f64().unwrap_or(f64::NAN)
                ),
            ),
        ];
        for row in report["sweep"].as_array().into_iter().flatten() {
            figures.push((
                format!("robust accuracy at eps={}", row["eps"]),
                pct(&row["summary"]["robust_accuracy"]),
            ));
        }
        let rules = report["gate"]["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["rule"].as_str().unwrap_or("?").to_owned(),
                    r["passed"].as_bool() == Some(true),
                    r["message"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let checks = report["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or("?").to_owned(),
                    c["status"].as_str().unwrap_or("?").to_owned(),
                    c["message"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        Self {
            model: model.to_owned(),
            id: id.to_owned(),
            passed: report["gate"]["passed"].as_bool() == Some(true),
            figures,
            rules,
            checks,
            seconds: report["timings"]["total_ms"].as_f64().unwrap_or(0.0) / 1000.0,
        }
    }

    fn verdict(&self) -> &'static str {
        if self.passed {
            "PASSED"
        } else {
            "FAILED"
        }
    }

    fn table(&self) -> String {
        let width = self
            .figures
            .iter()
            .map(|(k, _)| k.len())
            .chain(self.rules.iter().map(|(r, _, _)| r.len()))
            .chain(self.checks.iter().map(|(c, _, _)| c.len()))
            .max()
            .unwrap_or(10);
        let mut out = format!("robustd gate: {} ({})\n", self.model, self.id);
        for (k, v) in &self.figures {
            let _ = writeln!(out, "  {k:width$}  {v}");
        }
        out.push_str("checks\n");
        for (name, status, _) in &self.checks {
            let _ = writeln!(out, "  {name:width$}  {status}");
        }
        out.push_str("gate\n");
        for (rule, passed, message) in &self.rules {
            let mark = if *passed { "pass" } else { "FAIL" };
            let _ = writeln!(out, "  {rule:width$}  {mark}  {message}");
        }
        let _ = writeln!(out, "verdict: {}", self.verdict());
        out
    }

    fn junit(&self) -> String {
        let failures = self.rules.iter().filter(|(_, passed, _)| !passed).count();
        let skipped = self
            .checks
            .iter()
            .filter(|(_, s, _)| s == "skipped")
            .count();
        let tests = self.rules.len() + self.checks.len();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuites name=\"robustd\" tests=\"{tests}\" failures=\"{failures}\" time=\"{:.3}\">",
            self.seconds
        );
        let _ = writeln!(
            out,
            "  <testsuite name=\"robustd gate {}\" tests=\"{tests}\" failures=\"{failures}\" \
             skipped=\"{skipped}\" time=\"{:.3}\">",
            xml(&self.model),
            self.seconds
        );
        out.push_str("    <properties>\n");
        for (k, v) in &self.figures {
            let _ = writeln!(
                out,
                "      <property name=\"{}\" value=\"{}\"/>",
                xml(k),
                xml(v)
            );
        }
        let _ = writeln!(
            out,
            "      <property name=\"evaluation\" value=\"{}\"/>",
            xml(&self.id)
        );
        out.push_str("    </properties>\n");
        for (rule, passed, message) in &self.rules {
            let _ = write!(
                out,
                "    <testcase classname=\"robustd.gate\" name=\"{}\">",
                xml(rule)
            );
            if !passed {
                let _ = write!(
                    out,
                    "<failure message=\"{}\">{}</failure>",
                    xml(message),
                    xml(message)
                );
            } else {
                let _ = write!(out, "<system-out>{}</system-out>", xml(message));
            }
            out.push_str("</testcase>\n");
        }
        for (name, status, message) in &self.checks {
            let _ = write!(
                out,
                "    <testcase classname=\"robustd.checks\" name=\"{}\">",
                xml(name)
            );
            if status == "skipped" {
                let _ = write!(out, "<skipped message=\"{}\"/>", xml(message));
            } else {
                let _ = write!(
                    out,
                    "<system-out>{}: {}</system-out>",
                    xml(status),
                    xml(message)
                );
            }
            out.push_str("</testcase>\n");
        }
        out.push_str("  </testsuite>\n</testsuites>\n");
        out
    }

    fn markdown(&self) -> String {
        let mut out = format!(
            "### robustd gate: `{}` {}\n\n| | |\n|---|---|\n",
            self.model,
            if self.passed { "passed" } else { "**failed**" }
        );
        for (k, v) in &self.figures {
            let _ = writeln!(out, "| {} | {} |", md(k), md(v));
        }
        out.push_str("\n| rule | result | detail |\n|---|---|---|\n");
        for (rule, passed, message) in &self.rules {
            let mark = if *passed { "pass" } else { "**fail**" };
            let _ = writeln!(out, "| `{}` | {mark} | {} |", md(rule), md(message));
        }
        out.push_str("\n| sanity check | status | detail |\n|---|---|---|\n");
        for (name, status, message) in &self.checks {
            let _ = writeln!(out, "| `{}` | {} | {} |", md(name), md(status), md(message));
        }
        let _ = writeln!(out, "\nEvaluation `{}`.\n", self.id);
        out
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn md(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_marks_failed_rules_and_escapes_text() {
        let report = json!({
            "summary": {"n": 10, "robust_accuracy": {"value": 0.5, "ci95": [0.2, 0.8]}},
            "gate": {"passed": false, "rules": [
                {"rule": "min_robust_accuracy", "passed": false, "message": "0.5 < 0.9 & <low>"},
                {"rule": "max_robust_loss", "passed": true, "message": "fine"}]},
            "checks": [{"name": "noise_weaker", "status": "skipped", "message": "ask"}],
            "timings": {"total_ms": 1500}
        });
        let summary = Summary::of(&report, "m", "id1");
        assert!(!summary.passed);
        let xml = summary.junit();
        assert!(xml.contains("tests=\"3\" failures=\"1\""), "{xml}");
        assert!(xml.contains("&amp; &lt;low&gt;"), "{xml}");
        assert!(xml.contains("<skipped message=\"ask\"/>"), "{xml}");
        assert!(summary.table().contains("verdict: FAILED"));
        assert!(summary.markdown().contains("**failed**"));
    }
}

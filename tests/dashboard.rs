//! The dashboard in a real browser: Debian's headless Chromium, driven over WebDriver by
//! chromedriver, against a real server with real worker processes. `./dev test` installs both.
//!
//! With `ROBUSTD_DASHBOARD_SCREENSHOTS=<folder>` the test also saves the screenshots that
//! docs/ holds (laptop and phone widths).

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Digits, TestServer};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C WebDriver key under which an element reference travels.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process on a free port, killed when dropped.
struct Chromedriver {
    child: Child,
    base: String,
}

impl Chromedriver {
    async fn start() -> Self {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(binary).exists(),
                "{binary} is missing: the dashboard test drives Debian's chromium and \
                 chromium-driver packages (./dev test installs them)"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = client.get(format!("{}/status", driver.base)).send().await;
            if let Ok(status) = status {
                let body: Value = status.json().await.unwrap_or_default();
                if body["value"]["ready"] == true {
                    return driver;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One headless Chromium session with its own profile folder.
struct Browser {
    client: reqwest::Client,
    session: String,
    profile: PathBuf,
}

impl Browser {
    async fn start(driver: &Chromedriver, width: u32, height: u32) -> Self {
        let profile =
            std::env::temp_dir().join(format!("robustd-chromium-{}", uuid::Uuid::new_v4()));
        // No internet here: without these flags Chromium waits on the network.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            &format!("--window-size={width},{height}"),
            &format!("--user-data-dir={}", profile.display()),
        ];
        let client = reqwest::Client::new();
        let response: Value = client
            .post(format!("{}/session", driver.base))
            .json(&json!({ "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            }}}))
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .unwrap();
        let session = response["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {response}"))
            .to_owned();
        Self {
            client,
            session: format!("{}/session/{session}", driver.base),
            profile,
        }
    }

    /// One WebDriver command; its `value`, or a panic naming the command and the error.
    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.session);
        let mut request = self.client.request(method.clone(), &url);
        if method != reqwest::Method::GET {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        if answer["value"]["error"].is_string() {
            panic!("WebDriver {method} {path}: {}", answer["value"]);
        }
        answer["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    /// Runs `script` (a function body) in the page with `args`; its return value.
    async fn run(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
        .await
    }

    /// Waits until `expression` is truthy in the page; its value.
    async fn wait_for(&self, what: &str, expression: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self
                .run(&format!("return ({expression}) || null;"), json!([]))
                .await;
            if !value.is_null() && value != false {
                return value;
            }
            if Instant::now() > deadline {
                let text = self.run("return document.body.innerText;", json!([])).await;
                panic!("waited {timeout:?} for {what}; the page shows:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        found[ELEMENT].as_str().unwrap().to_owned()
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            json!({}),
        )
        .await;
    }

    /// Clears a text field and types `text` into it, key by key.
    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/clear"),
            json!({}),
        )
        .await;
        if !text.is_empty() {
            self.command(
                reqwest::Method::POST,
                &format!("/element/{element}/value"),
                json!({ "text": text }),
            )
            .await;
        }
    }

    /// Makes the page's viewport `width` by `height` CSS pixels, as a phone (narrower than 600)
    /// or a laptop shows it.
    async fn viewport(&self, width: u32, height: u32) {
        self.command(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            json!({ "cmd": "Emulation.setDeviceMetricsOverride", "params": {
                "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600,
            }}),
        )
        .await;
    }

    /// A PNG of the page drawn afresh at `width` (once `ready` holds), as tall as the page up
    /// to `max_height`.
    async fn screenshot(&self, file: &Path, width: u32, max_height: u32, ready: &str) {
        self.viewport(width, 800).await;
        self.command(reqwest::Method::POST, "/refresh", json!({}))
            .await;
        self.wait_for("the page to draw again", ready, Duration::from_secs(20))
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let height = self
            .run("return document.documentElement.scrollHeight;", json!([]))
            .await
            .as_u64()
            .unwrap() as u32;
        self.viewport(width, height.clamp(400, max_height)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let png = self
            .command(reqwest::Method::GET, "/screenshot", json!({}))
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        std::fs::write(file, bytes).unwrap();
        self.viewport(LAPTOP, 900).await;
    }

    async fn close(self) {
        self.command(reqwest::Method::DELETE, "", json!({})).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failed test leaves the browser to chromedriver, which ends it; the profile goes here.
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Where screenshots go, when they are asked for.
fn screenshot_folder() -> Option<PathBuf> {
    let folder = PathBuf::from(std::env::var_os("ROBUSTD_DASHBOARD_SCREENSHOTS")?);
    std::fs::create_dir_all(&folder).unwrap();
    Some(folder)
}

const LAPTOP: u32 = 1280;
const PHONE: u32 = 390;

/// Records every value the live progress bar takes, from before the evaluation starts.
const WATCH_PROGRESS: &str = "
    window.progressSeen = [];
    new MutationObserver((records) => {
        for (const r of records) {
            if (r.target.matches && r.target.matches('[role=progressbar][data-live]')) {
                window.progressSeen.push(Number(r.target.getAttribute('aria-valuenow')));
            }
        }
    }).observe(document.body, { subtree: true, attributes: true, attributeFilter: ['aria-valuenow'] });
";

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_starts_an_evaluation_follows_it_and_shows_its_report() {
    let begun = Instant::now();
    let driver = Chromedriver::start().await;
    let server = TestServer::start(&[]).await;
    let api = reqwest::Client::new();
    let browser = Browser::start(&driver, LAPTOP, 900).await;
    let shots = screenshot_folder();

    // The models: name, sha256 and the card's clean accuracy, before any evaluation.
    eprintln!("{:?}: models", begun.elapsed());
    browser.goto(&server.url("/")).await;
    let meta: Value = server.get_json("/v2/models/digits_cnn").await;
    let card = browser
        .wait_for(
            "the digits_cnn model card",
            "(() => { const m = document.querySelector('[data-model=digits_cnn]');
                return m && { sha: m.querySelector('.sha').textContent,
                              clean: m.querySelector('.clean-accuracy').textContent,
                              robust: m.querySelector('.robust-accuracy').textContent }; })()",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(card["sha"], meta["sha256"]);
    assert!(
        card["clean"].as_str().unwrap().starts_with("99.2%"),
        "{card}"
    );
    assert_eq!(card["robust"], "no evaluation yet");
    browser
        .wait_for(
            "the empty evaluation list",
            "document.querySelector('#no-evaluations')",
            Duration::from_secs(5),
        )
        .await;

    // Start a small sweep from the form: 40 samples in chunks of 8, PGD at two eps, every check.
    eprintln!("{:?}: start", begun.elapsed());
    browser.run(WATCH_PROGRESS, json!([])).await;
    browser
        .click("#start-form select[name=model] option[value=digits_cnn]")
        .await;
    browser
        .type_into("#start-form input[name=limit]", "40")
        .await;
    browser
        .type_into("#start-form input[name=eps]", "0.05, 0.1")
        .await;
    browser
        .type_into("#start-form input[name=steps]", "20")
        .await;
    browser
        .type_into("#start-form input[name=min_robust_accuracy]", "30")
        .await;
    browser.click("#start-form details summary").await;
    browser
        .type_into("#start-form input[name=chunk_size]", "8")
        .await;
    let started = Instant::now();
    browser.click("#start-form button[type=submit]").await;

    // The page follows the job to 100% and then shows its report.
    let id = browser
        .wait_for(
            "the evaluation's page",
            "(location.hash.match(/^#\\/evaluations\\/(.+)$/) || [])[1]",
            Duration::from_secs(10),
        )
        .await
        .as_str()
        .unwrap()
        .to_owned();
    browser
        .wait_for(
            "progress to reach 100%",
            "document.querySelector('[role=progressbar][data-live]')?.getAttribute('aria-valuenow') === '100'",
            Duration::from_secs(90),
        )
        .await;
    browser
        .wait_for(
            "the report",
            "document.querySelector('#checks li') && document.querySelector('#gallery .tile')",
            Duration::from_secs(30),
        )
        .await;
    eprintln!(
        "evaluation followed to its report in {:?}",
        started.elapsed()
    );
    let seen: Vec<i64> =
        serde_json::from_value(browser.run("return window.progressSeen;", json!([])).await)
            .unwrap();
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(seen.iter().any(|&p| 0 < p && p < 100), "{seen:?}");
    assert_eq!(seen.last(), Some(&100), "{seen:?}");
    let text: String = serde_json::from_value(
        browser
            .run(
                "return document.querySelector('#progress-text').textContent;",
                json!([]),
            )
            .await,
    )
    .unwrap();
    assert_eq!(text, "40 / 40 samples");

    // What the page shows is what the API reports.
    let job: Value = server.get_json(&format!("/v2/evaluations/{id}")).await;
    assert_eq!(job["model"], "digits_cnn");
    assert_eq!(job["status"], "succeeded");
    let report = &job["report"];
    assert_eq!(report["summary"]["n"], 40);
    assert_eq!(report["sweep"].as_array().unwrap().len(), 2);

    // The curve: clean accuracy at eps 0, then one point per eps, at the reported values.
    let points = browser
        .run(
            "return [...document.querySelectorAll('#curve svg .point')].map((p) =>
                [Number(p.dataset.eps), Number(p.dataset.value)]);",
            json!([]),
        )
        .await;
    let points: Vec<(f64, f64)> = serde_json::from_value(points).unwrap();
    let value = |v: &Value| v.as_f64().unwrap();
    let expected = vec![
        (0.0, value(&report["summary"]["clean_accuracy"]["value"])),
        (
            0.05,
            value(&report["sweep"][0]["summary"]["robust_accuracy"]["value"]),
        ),
        (
            0.1,
            value(&report["sweep"][1]["summary"]["robust_accuracy"]["value"]),
        ),
    ];
    assert_eq!(points, expected);
    let band = browser
        .run("return document.querySelector('#curve svg .band').getAttribute('points').split(' ').length;", json!([]))
        .await;
    assert_eq!(band, 6, "a confidence band around the three points");

    // The checks: every one, with its badge colour and sentence.
    let shown = browser
        .run(
            "return [...document.querySelectorAll('#checks li')].map((li) => ({
                name: li.dataset.check, status: li.dataset.status,
                badge: getComputedStyle(li.querySelector('.badge')).color,
                message: li.querySelector('p').textContent }));",
            json!([]),
        )
        .await;
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(shown.as_array().unwrap().len(), checks.len());
    assert!(checks.len() >= 7, "{checks:?}");
    for (shown, check) in shown.as_array().unwrap().iter().zip(checks) {
        assert_eq!(shown["name"], check["name"]);
        assert_eq!(shown["status"], check["status"]);
        assert_eq!(shown["message"], check["message"]);
        let colour = match check["status"].as_str().unwrap() {
            "pass" => "rgb(26, 127, 55)",
            "warn" => "rgb(138, 90, 0)",
            "fail" => "rgb(192, 38, 45)",
            _ => "rgb(89, 98, 110)",
        };
        assert_eq!(shown["badge"], colour, "{shown}");
    }

    // The gate's verdict and the per-attack breakdown.
    let verdict = browser
        .run(
            "return document.querySelector('#gate-verdict').textContent;",
            json!([]),
        )
        .await;
    let passed = report["gate"]["passed"].as_bool().unwrap();
    assert_eq!(verdict, if passed { "Gate passed" } else { "Gate failed" });
    let rows = browser
        .run(
            "return [...document.querySelectorAll('#breakdown tbody tr')].map((tr) =>
                [...tr.querySelectorAll('td.count')].map((td) => parseInt(td.textContent)));",
            json!([]),
        )
        .await;
    for (row, sweep) in rows
        .as_array()
        .unwrap()
        .iter()
        .zip(report["sweep"].as_array().unwrap())
    {
        let s = &sweep["summary"];
        let n = s["n"].as_i64().unwrap();
        assert_eq!(
            row,
            &json!([
                s["robust_accuracy"]["count"],
                s["by_attack"][0]["broke"],
                n - s["clean_accuracy"]["count"].as_i64().unwrap()
            ])
        );
    }

    // The gallery: clean input, adversarial example and perturbation per sample, with labels;
    // the clean picture's pixels are the data set's, and broken samples come first.
    let tiles = browser
        .run(
            "return [...document.querySelectorAll('#gallery .tile')].map((tile) => {
                const pixels = (cls) => {
                    const c = tile.querySelector('canvas.' + cls);
                    return [...c.getContext('2d').getImageData(0, 0, c.width, c.height).data]
                        .filter((_, i) => i % 4 === 0);
                };
                return { index: Number(tile.dataset.index),
                         truth: tile.querySelector('.true-label b').textContent,
                         clean: tile.querySelector('.clean-label b').textContent,
                         adversarial: tile.querySelector('.adversarial-label b').textContent,
                         pixels: pixels('clean'), adversarialPixels: pixels('adversarial'),
                         canvases: tile.querySelectorAll('canvas').length };
            });",
            json!([]),
        )
        .await;
    let tiles = tiles.as_array().unwrap();
    let digits = Digits::load();
    let samples = report["samples"].as_array().unwrap();
    let broken = samples
        .iter()
        .filter(|s| s["clean_correct"] == true && s["robust"] == false)
        .count();
    assert!(
        broken > 0,
        "PGD at eps 0.1 breaks some of digits_cnn's samples"
    );
    assert_eq!(tiles.len(), 12.min(samples.len()));
    for (k, tile) in tiles.iter().enumerate() {
        let i = tile["index"].as_u64().unwrap() as usize;
        let sample = &samples[i];
        assert_eq!(tile["canvases"], 3);
        assert_eq!(tile["truth"], digits.y[i].to_string());
        assert_eq!(tile["clean"], sample["clean_prediction"].to_string());
        assert_eq!(
            tile["adversarial"],
            sample["adversarial_prediction"].to_string()
        );
        let expected: Vec<u64> = digits
            .inputs(i..i + 1)
            .iter()
            .map(|v| (v * 255.0).round() as u64)
            .collect();
        let pixels: Vec<u64> = serde_json::from_value(tile["pixels"].clone()).unwrap();
        assert_eq!(pixels, expected, "sample {i}");
        if k < broken {
            assert_eq!(sample["robust"], false, "broken samples first");
            assert_ne!(tile["adversarialPixels"], tile["pixels"], "sample {i}");
        }
    }

    if let Some(folder) = &shots {
        let report_png = folder.join("dashboard-report.png");
        let ready = "document.querySelector('#gallery .tile')";
        browser.screenshot(&report_png, LAPTOP, 4000, ready).await;
        let phone_png = folder.join("dashboard-report-phone.png");
        browser.screenshot(&phone_png, PHONE, 1800, ready).await;
    }

    // The overview now lists the evaluation and the model's latest robust accuracy.
    eprintln!("{:?}: overview", begun.elapsed());
    browser.click("#nav-overview").await;
    let robust = report["summary"]["robust_accuracy"]["value"]
        .as_f64()
        .unwrap();
    let figure = format!("{:.1}%", robust * 100.0);
    browser
        .wait_for(
            "the latest robust accuracy",
            &format!(
                "document.querySelector('[data-model=digits_cnn] .robust-accuracy')?.textContent.startsWith('{figure}')"
            ),
            Duration::from_secs(10),
        )
        .await;
    browser
        .wait_for(
            "the evaluation in the list",
            &format!(
                "document.querySelector('#evaluations li[data-id=\"{id}\"] .badge.succeeded')"
            ),
            Duration::from_secs(10),
        )
        .await;

    // A long evaluation (45 chunks of 200 steps) is cancelled from its page once it has made
    // some progress.
    eprintln!("{:?}: cancel", begun.elapsed());
    browser
        .click("#start-form select[name=model] option[value=digits_cnn]")
        .await;
    browser
        .type_into("#start-form input[name=limit]", "360")
        .await;
    browser
        .type_into("#start-form input[name=eps]", "0.1")
        .await;
    browser
        .type_into("#start-form input[name=steps]", "200")
        .await;
    browser.click("#start-form details summary").await;
    browser
        .type_into("#start-form input[name=chunk_size]", "8")
        .await;
    browser.click("#start-form button[type=submit]").await;
    let under_way = "document.querySelector('#job-status .badge.running') && \
        Number(document.querySelector('[role=progressbar][data-live]').getAttribute('aria-valuenow')) > 0";
    browser
        .wait_for(
            "the long evaluation to make progress",
            under_way,
            Duration::from_secs(60),
        )
        .await;
    let long_id = browser
        .run(
            "return document.querySelector('#evaluation').dataset.id;",
            json!([]),
        )
        .await;
    assert_ne!(long_id, json!(id));
    if let Some(folder) = &shots {
        let running_png = folder.join("dashboard-running.png");
        browser
            .screenshot(&running_png, LAPTOP, 700, under_way)
            .await;
    }
    browser.click("#cancel").await;
    browser
        .wait_for(
            "the cancelled notice",
            "document.querySelector('#job-cancelled')",
            Duration::from_secs(30),
        )
        .await;
    let long = server
        .get_json(&format!("/v2/evaluations/{}", long_id.as_str().unwrap()))
        .await;
    assert_eq!(long["status"], "cancelled");

    // A job that fails says why: a model for 3 x 32 x 32 images whose card says 1 x 8 x 8, so
    // that the digits pass validation and the model fails on them.
    eprintln!("{:?}: failed job", begun.elapsed());
    let card = json!({
        "name": "cifar_as_digits", "task": "classification", "num_classes": 10,
        "input": { "shape": [1, 8, 8] },
    });
    let upload = api
        .put(server.url("/v2/repository/models/cifar_as_digits"))
        .header("Model-Card", card.to_string())
        .body(std::fs::read(common::repo_root().join("models/cifar_resnet.pt")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 201, "{}", upload.text().await.unwrap());
    browser.click("#nav-overview").await;
    browser
        .wait_for(
            "the uploaded model in the form",
            "document.querySelector('#start-form select[name=model] option[value=cifar_as_digits]')",
            Duration::from_secs(10),
        )
        .await;
    browser
        .click("#start-form select[name=model] option[value=cifar_as_digits]")
        .await;
    browser
        .type_into("#start-form input[name=limit]", "8")
        .await;
    browser.click("#start-form button[type=submit]").await;
    let failure = browser
        .wait_for(
            "the failed evaluation's message",
            "document.querySelector('#job-failed')?.textContent",
            Duration::from_secs(30),
        )
        .await;
    let failure = failure.as_str().unwrap();
    let failed_id = browser
        .run(
            "return document.querySelector('#evaluation').dataset.id;",
            json!([]),
        )
        .await;
    let failed = server
        .get_json(&format!("/v2/evaluations/{}", failed_id.as_str().unwrap()))
        .await;
    assert_eq!(failed["status"], "failed");
    let error = failed["error"].as_str().unwrap();
    assert!(!error.is_empty());
    assert_eq!(failure, format!("This evaluation failed. {error}"));

    // The list shows each job's end, and the failed one's reason.
    browser.click("#nav-overview").await;
    let listed = browser
        .wait_for(
            "the failed job in the list",
            &format!(
                "document.querySelector('#evaluations li[data-id=\"{}\"] .job-error')?.textContent",
                failed_id.as_str().unwrap()
            ),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(listed, json!(error));
    if let Some(folder) = &shots {
        let overview_png = folder.join("dashboard-overview.png");
        let ready = "document.querySelector('#evaluations .badge.failed')";
        browser.screenshot(&overview_png, LAPTOP, 4000, ready).await;
        let phone_png = folder.join("dashboard-overview-phone.png");
        browser.screenshot(&phone_png, PHONE, 1800, ready).await;
    }

    // A server that goes away: the page says the connection is lost.
    eprintln!("{:?}: lost connection", begun.elapsed());
    let mut server = server;
    server.terminate();
    browser.click("#nav-overview").await;
    let banner = browser
        .wait_for(
            "the lost-connection banner",
            "!document.querySelector('#banner').hidden && document.querySelector('#banner').textContent",
            Duration::from_secs(10),
        )
        .await;
    assert!(
        banner.as_str().unwrap().contains("Lost the connection"),
        "{banner}"
    );
    drop(server);

    // An empty server: no models, no data sets, no evaluations, each said plainly.
    eprintln!("{:?}: empty server", begun.elapsed());
    let empty = tempdir();
    let empty_server = TestServer::spawn(&["--models", empty.to_str().unwrap()]);
    browser.goto(&empty_server.url("/")).await;
    browser
        .wait_for(
            "the empty-server messages",
            "document.querySelector('#no-models') && document.querySelector('#no-evaluations')",
            Duration::from_secs(20),
        )
        .await;
    let banner_hidden = browser
        .run(
            "return document.querySelector('#banner').hidden;",
            json!([]),
        )
        .await;
    assert_eq!(banner_hidden, true);
    if let Some(folder) = &shots {
        let empty_png = folder.join("dashboard-empty-phone.png");
        let ready = "document.querySelector('#no-models')";
        browser.screenshot(&empty_png, PHONE, 1200, ready).await;
    }
    drop(empty_server);
    let _ = std::fs::remove_dir_all(empty);

    // A server that wants a token: the page asks for one, keeps it and sends it.
    eprintln!("{:?}: token", begun.elapsed());
    let token = "read:dashboard-test-token-0123456789";
    let guarded = TestServer::spawn(&["--tokens", token]);
    browser.goto(&guarded.url("/")).await;
    let reason = browser
        .wait_for(
            "the token form",
            "!document.querySelector('#token-form').hidden && \
                document.querySelector('#token-reason').textContent",
            Duration::from_secs(20),
        )
        .await;
    assert!(reason.as_str().unwrap().contains("token"), "{reason}");
    browser
        .type_into("#token-input", token.trim_start_matches("read:"))
        .await;
    browser.click("#token-form button[type=submit]").await;
    browser
        .wait_for(
            "the models, read with the token",
            "document.querySelector('#token-form').hidden && \
                document.querySelector('[data-model=digits_cnn]')",
            Duration::from_secs(30),
        )
        .await;
    browser.close().await;
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("robustd-empty-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

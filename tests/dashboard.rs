//! The dashboard in headless Chromium, driven over the DevTools protocol
//! as a person would use it: real mouse clicks and typing. It shows a
//! check waiting out `success_threshold` as "recovering n/N", opens an
//! incident's view with every attempt, asks for the token before a heal,
//! and lays out without clipped labels at 1400 px and at phone width.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::service::*;
use mend::store::IncidentState;
use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Chromium, if this machine has it (scripts/test installs it).
fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        let out = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .ok()?;
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
    })
}

/// One headless Chromium with one page, over the DevTools protocol.
struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next: u64,
    /// The page's console messages and uncaught exceptions, for failures.
    console: Vec<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch(chromium: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting chromium");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("chromium exited before listening")
                .unwrap();
            if let Some(u) = line.strip_prefix("DevTools listening on ") {
                break u.trim().to_string();
            }
        };
        // Keep draining its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let (ws, _) = tungstenite::connect(&url).expect("connecting to chromium");
        let mut b = Browser {
            child,
            ws,
            session: String::new(),
            next: 0,
            console: Vec::new(),
            _profile: profile,
        };
        let target = b.send(None, "Target.createTarget", json!({"url": "about:blank"}));
        let attached = b.send(
            None,
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b.call("Page.enable", json!({}));
        b.call("Runtime.enable", json!({}));
        b
    }

    fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws.send(Message::text(msg.to_string())).unwrap();
        loop {
            let Message::Text(t) = self.ws.read().unwrap() else {
                continue;
            };
            let v: Value = serde_json::from_str(&t).unwrap();
            match v["method"].as_str() {
                Some("Runtime.consoleAPICalled") => {
                    self.console.push(v["params"]["args"].to_string())
                }
                Some("Runtime.exceptionThrown") => self
                    .console
                    .push(v["params"]["exceptionDetails"].to_string()),
                _ => {}
            }
            if v["id"] == json!(id) {
                assert!(v["error"].is_null(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let s = self.session.clone();
        self.send(Some(&s), method, params)
    }

    /// Evaluates `js` in the page (awaiting a promise) and returns its value.
    fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "awaitPromise": true, "returnByValue": true}),
        );
        assert!(
            r["exceptionDetails"].is_null(),
            "{js}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    fn wait(&mut self, what: &str, js: &str) -> Value {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            let v = self.eval(js);
            if !v.is_null() && v != json!(false) {
                return v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let body = self.eval("document.body ? document.body.innerText : ''");
        panic!(
            "timed out waiting for {what}; the page says:\n{body}\nconsole: {:?}",
            self.console
        );
    }

    fn size(&mut self, width: u32, height: u32) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}),
        );
    }

    fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait(
            "the page to load its data",
            "document.body && document.body.dataset.loaded === 'true'",
        );
    }

    /// A real mouse click in the middle of the element `selector`.
    fn click(&mut self, selector: &str) {
        let js = format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return null; e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            sel = json!(selector)
        );
        let at = self.wait(&format!("{selector} to be there"), &js);
        let (x, y) = (at[0].as_f64().unwrap(), at[1].as_f64().unwrap());
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    fn type_text(&mut self, text: &str) {
        self.call("Input.insertText", json!({"text": text}));
    }

    fn screenshot(&mut self, path: &Path) {
        let r = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": false}),
        );
        let png = data_encoding::BASE64
            .decode(r["data"].as_str().unwrap().as_bytes())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// What is laid out wrongly: SVG labels outside their chart, and any
    /// horizontal overflow of the page or a table's box.
    fn layout_problems(&mut self) -> Vec<String> {
        let v = self.eval(
            r#"(() => {
                const out = [];
                for (const svg of document.querySelectorAll("svg")) {
                    const w = svg.clientWidth;
                    for (const t of svg.querySelectorAll("text")) {
                        const b = t.getBBox();
                        if (b.x < -0.5 || b.x + b.width > w + 0.5)
                            out.push(svg.id + ": label '" + t.textContent + "' spans " + b.x.toFixed(1) + ".." + (b.x + b.width).toFixed(1) + " of " + w);
                    }
                }
                const de = document.documentElement;
                if (de.scrollWidth > window.innerWidth + 1)
                    out.push("the page is " + de.scrollWidth + " px wide in a " + window.innerWidth + " px window");
                for (const s of document.querySelectorAll(".scroll"))
                    if (s.offsetParent && s.scrollWidth > s.clientWidth + 1)
                        out.push("a table overflows its box: " + s.scrollWidth + " > " + s.clientWidth);
                return out;
            })()"#,
        );
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_dashboard_shows_what_mend_did_and_acts_with_the_token() {
    let Some(chromium) = chromium() else {
        println!("SKIPPED: chromium is not installed (scripts/test installs it with apt-get)");
        return;
    };
    // Health needs many passes in a row: the check stays "recovering".
    let m = Mend::start_opts(Opts {
        check: "success_threshold = 1000",
        ..Opts::default()
    });
    m.set("app", "fail disk.full");
    m.wait_for("the check to fail", Duration::from_secs(30), |m| {
        m.check("app")["status"] == "fail"
    });
    let (code, v) = m.post("/api/v1/checks/app/heal", Some(TOKEN), &json!({}));
    assert_eq!(code, 202, "{v}");
    m.wait_for("the heal", Duration::from_secs(30), |m| {
        m.incidents()
            .first()
            .is_some_and(|i| i.state == IncidentState::Healed)
    });
    m.wait_for("recovering", Duration::from_secs(30), |m| {
        !m.check("app")["recovering"].is_null()
    });

    let mut b = Browser::launch(&chromium);
    b.size(1400, 900);
    b.open(&format!("{}/", m.url));
    let row = b.wait(
        "the check's row",
        "(() => { const r = document.querySelector('tr[data-check=app]'); return r && r.innerText; })()",
    );
    let row = row.as_str().unwrap();
    assert!(
        row.contains("recovering ") && row.contains("/1000"),
        "{row}"
    );
    assert!(
        !row.contains("unavailable") && !row.contains("degraded"),
        "no red badge beside green: {row}"
    );
    let legend = b.eval("document.getElementById('legend').innerText");
    assert!(
        legend.as_str().unwrap().contains("recovering n/N"),
        "{legend}"
    );
    assert_eq!(b.layout_problems(), Vec::<String>::new(), "at 1400 px");
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    b.screenshot(&shot);
    println!("screenshot: {}", shot.display());

    // Click path: the incident on the timeline opens its view.
    b.click("#timeline g[data-incident='1'] rect");
    let view = b.wait(
        "the incident view",
        "(() => { const v = document.getElementById('incident-view'); return v.dataset.incident === '1' && v.style.display === 'block' && v.innerText; })()",
    );
    let view = view.as_str().unwrap();
    for want in [
        "Incident #1",
        "policy fix-app",
        "manual heal requested by api",
        "ladder",
        "fix",
        "healed",
        "message: fixed",
        "changed: yes",
        "wrote \"ok\" to /ctl/app",
        "warning",
        "Timeline",
        "operator-heal by api",
    ] {
        assert!(
            view.contains(want),
            "no `{want}` in the incident view:\n{view}"
        );
    }
    let buttons = b.eval(
        "[!!document.getElementById('ack-incident'), !!document.getElementById('resolve-incident')].join()",
    );
    assert_eq!(
        buttons, "false,false",
        "a healed incident has nothing to acknowledge or resolve"
    );
    b.screenshot(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-incident.png"));
    b.click("#close-incident");

    // A dry-run heal of the failing check: the page asks for the token,
    // then plans.
    m.set("app", "fail disk.full");
    m.wait_for("the check to fail", Duration::from_secs(30), |m| {
        m.check("app")["status"] == "fail"
    });
    b.click("tr[data-check=app] button[data-action=dry-run]");
    b.wait(
        "the token form",
        "document.getElementById('tokenform').style.display === 'block'",
    );
    b.click("#token");
    b.type_text(TOKEN);
    b.click("#tokenform button[type=submit]");
    let notice = b.wait(
        "the heal's answer",
        "(() => { const n = document.getElementById('notice'); return n.style.display === 'block' && n.innerText; })()",
    );
    assert!(
        notice.as_str().unwrap().contains("planning, incident #2"),
        "{notice}"
    );
    b.click("#notice a[data-incident='2']");
    let view = b.wait(
        "incident 2",
        "(() => { const v = document.getElementById('incident-view'); return v.dataset.incident === '2' && v.innerText; })()",
    );
    let view = view.as_str().unwrap();
    assert!(
        view.contains("plan (dry run):") && view.contains("would write"),
        "{view}"
    );
    assert_eq!(m.read("app"), "fail disk.full", "a dry run changes nothing");

    // Pause and resume the check from its row (the token is kept).
    b.click("tr[data-check=app] button[data-action=pause]");
    m.wait_for("the check's pause", Duration::from_secs(30), |m| {
        m.check("app")["paused"]["reason"] == "paused from the dashboard"
    });
    b.wait(
        "the row to offer resume",
        "!!document.querySelector('tr[data-check=app] button[data-action=resume]')",
    );
    b.click("tr[data-check=app] button[data-action=resume]");
    m.wait_for("the check's resume", Duration::from_secs(30), |m| {
        m.check("app")["paused"].is_null()
    });

    // Phone width: nothing overflows or is clipped.
    b.size(390, 844);
    b.open(&format!("{}/#incident/1", m.url));
    b.wait(
        "the incident view",
        "document.getElementById('incident-view').dataset.incident === '1'",
    );
    // The charts redraw for the new width on their next refresh: allow it
    // a few seconds, then the layout must fit.
    let mut problems = b.layout_problems();
    for _ in 0..100 {
        if problems.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        problems = b.layout_problems();
    }
    assert_eq!(problems, Vec::<String>::new(), "at 390 px");
    b.screenshot(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-phone.png"));
    drop(b);
    m.stop();
}

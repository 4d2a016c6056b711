//! The operator commands as a person types them (issue: on-call and operators): `--unit` in
//! every form systemctl accepts, orders whose scope matches no unit refused with the units
//! that exist, `uncordon` beside `undrain`, and `--json` on the commands that report.

use crate::supervisor::{drover, Host};
use std::time::Duration;

const CLASS: &str = r#"
[classes.w]
mode = "persistent"
command = ["python3", "{handler}", "persistent"]
timeout = "60s"
workers = 2
"#;

fn run(h: &Host, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = args.to_vec();
    all.push("--config");
    let out = drover(&all, &h.config);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not one JSON document ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_in_every_systemctl_form_unknown_scopes_refused_and_json_everywhere() {
    let mut h = Host::new("cli", CLASS);
    h.start_supervisor();
    h.wait_status("two healthy units", Duration::from_secs(60), |u| {
        u.len() == 2 && u.values().all(|s| s.health == "healthy")
    });
    let unit = h.unit("w-1"); // dw-<id>@w-1.service
    let bare = unit.trim_end_matches(".service").to_string();

    // systemctl's name without `.service`: cordoned, one JSON document.
    let (code, out, err) = run(&h, &["cordon", "--unit", &bare, "--reason", "disk check", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let doc = json(&out);
    assert_eq!(doc["ok"], true, "{doc}");
    assert_eq!(doc["orders"].as_array().map(Vec::len), Some(1), "{doc}");
    h.wait_status("w-1 cordoned", Duration::from_secs(30), |u| u.get(&unit).is_some_and(|s| s.health == "cordoned"));

    // `uncordon` with the full name lifts it.
    let (code, out, err) = run(&h, &["uncordon", "--unit", &unit, "--reason", "disk fine", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(json(&out)["ok"], true);
    h.wait_status("w-1 back", Duration::from_secs(30), |u| u.get(&unit).is_some_and(|s| s.health == "healthy"));

    // A unit or class that does not exist: refused, exit 1, the units that do are listed, no order.
    let (code, _, err) =
        run(&h, &["drain", "--unit", "drover-worker@inference-3", "--deadline", "1m", "--reason", "x"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("matches no unit") && err.contains(&unit), "{err}");
    let (code, out, _) = run(&h, &["cordon", "--class", "nope", "--reason", "x", "--json"]);
    assert_eq!(code, Some(1));
    let doc = json(&out);
    assert_eq!(doc["ok"], false);
    assert!(doc["units"].as_array().is_some_and(|u| u.len() == 2), "{doc}");
    let (_, out, _) = run(&h, &["quarantine", "list", "--json"]);
    assert!(!out.contains("nope") && !out.contains("inference-3"), "nothing was ordered: {out}");

    // drain --json without --wait: the accepted order as one document; then undrain by instance.
    let (code, out, err) = run(&h, &["drain", "--unit", "w-2", "--deadline", "30s", "--reason", "swap", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let doc = json(&out);
    assert_eq!((doc["ok"].as_bool(), doc["orders"].as_array().map(Vec::len)), (Some(true), Some(1)), "{doc}");
    let (code, out, err) = run(&h, &["undrain", "--unit", "w-2", "--reason", "swapped", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(json(&out)["ok"], true);

    // check-config --json: ok with the classes; a bad file lists its problems, exit 2.
    let out = drover(&["check-config", "--json"], &h.config);
    let doc = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!((out.status.code(), doc["ok"].as_bool()), (Some(0), Some(true)), "{doc}");
    let bad = h.env.dir.join("bad.toml");
    std::fs::write(&bad, "[alerts]\nwebhook = \"http://::1:9095/\"\n[classes.x]\ncommand = \"x\"\n").expect("write");
    let out = drover(&["check-config", "--json"], &bad);
    let doc = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.status.code(), Some(2));
    let keys: Vec<&str> =
        doc["problems"].as_array().expect("problems").iter().filter_map(|p| p["key"].as_str()).collect();
    assert!(keys.contains(&"alerts.webhook") && keys.contains(&"classes.x.command"), "{doc}");

    // rollout --dry-run prints the waves and touches nothing.
    let (code, out, err) =
        run(&h, &["rollout", "--hosts", "a,b,c,d,e", "--waves", "1,2,100%", "--reason", "r", "--dry-run"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("wave 1 (1 host(s)): a")
            && out.contains("wave 2 (2 host(s)): b, c")
            && out.contains("wave 3 (2 host(s)): d, e"),
        "{out}"
    );

    // drain --wait off a terminal: one plain line per change, ending "safe to power off".
    let (code, out, err) =
        run(&h, &["drain", "--host", &h.name, "--deadline", "20s", "--reason", "memory swap", "--wait"]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.iter().all(|l| !l.starts_with('{')), "no JSON without --json: {out}");
    assert!(lines.iter().any(|l| l.contains("units stopped")), "{out}");
    assert!(lines.last().is_some_and(|l| l.contains("safe to power off")), "{out}");
    let mut unique = lines.clone();
    unique.dedup();
    assert_eq!(unique.len(), lines.len(), "a line per change, not per second: {out}");

    // status --fleet: this host answers, a host that is expected and absent is listed as such.
    let (code, out, err) = run(&h, &["status", "--fleet", "--expect", &format!("{},gone-host", h.name), "--json"]);
    assert_eq!(code, Some(1), "a host did not answer: {err}");
    let doc = json(&out);
    assert!(doc["answered"].as_array().is_some_and(|a| a.iter().any(|x| x == h.name.as_str())), "{doc}");
    assert_eq!(doc["not_answering"], serde_json::json!(["gone-host"]), "{doc}");
    assert!(doc["queue_depth"]["w"].is_u64(), "{doc}");
    assert!(doc["drains"].as_array().is_some_and(|d| !d.is_empty()), "the host drain above is listed: {doc}");
    let (code, out, _) = run(&h, &["status", "--fleet"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("drains and cordons:") && out.contains("memory swap"), "{out}");
}

//! The deployment files in conf/deploy: they parse, `promtool` accepts the rules and the
//! scrape config, the Kubernetes example's paysign.yaml is a valid configuration schema, and a
//! real Prometheus server scrapes a real paysign on loopback and answers queries for its series.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::Value;

fn deploy(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conf/deploy").join(name)
}

fn tool(name: &str) -> PathBuf {
    let p = PathBuf::from("/usr/bin").join(name);
    assert!(p.exists(), "{name} is needed for this test: apt-get install -y prometheus");
    p
}

#[test]
fn deployment_files_parse_and_the_example_config_matches_the_schema() {
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&std::fs::read_to_string(deploy("kubernetes.yaml")).unwrap())
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "Secret",
            "Deployment",
            "Service",
            "Service",
            "Service",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "NetworkPolicy",
            "NetworkPolicy",
            "NetworkPolicy",
            "NetworkPolicy"
        ]
    );
    // One Service per port, and a policy that opens exactly that port.
    for (service, port) in [("paysign", 8080), ("paysign-admin", 9091), ("paysign-notify", 8081)] {
        let svc = docs.iter().find(|d| d["kind"] == "Service" && d["metadata"]["name"] == service).unwrap();
        let ports: Vec<u64> = svc["spec"]["ports"].as_sequence().unwrap().iter().map(|p| p["port"].as_u64().unwrap()).collect();
        assert_eq!(ports, [port], "{service}");
        let opened = docs
            .iter()
            .filter(|d| d["kind"] == "NetworkPolicy")
            .filter(|d| d["spec"]["ingress"].as_sequence().is_some_and(|i| i.iter().any(|r| r["ports"][0]["port"].as_u64() == Some(port))));
        assert_eq!(opened.count(), 1, "port {port}");
    }
    let embedded = docs[0]["data"]["paysign.yaml"].as_str().unwrap();
    let parsed: Result<paysign_plugin::config::GatewayFile, _> = serde_yaml::from_str(embedded);
    assert!(parsed.is_ok(), "the ConfigMap's paysign.yaml does not match the schema: {:?}", parsed.err());
    for f in ["prometheus.yml", "alerts.yml"] {
        let _: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(deploy(f)).unwrap()).unwrap();
    }
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(deploy("grafana-dashboard.json")).unwrap()).unwrap();
    let exprs: Vec<&str> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    assert!(exprs.len() >= 8);
    // Every metric a dashboard or alert names is one paysign defines.
    let defined = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crates/plugin/src/ops/metrics.rs")).unwrap();
    let alerts = std::fs::read_to_string(deploy("alerts.yml")).unwrap();
    let all = format!("{} {alerts}", exprs.join(" "));
    let names: std::collections::BTreeSet<String> = all
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("paysign_"))
        .map(|w| w.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count").to_string())
        .collect();
    for n in &names {
        assert!(defined.contains(&format!("\"{n}\"")), "{n} is not a paysign metric");
    }
}

/// promtool's rule unit tests (`tests`: the file's `tests:` section) on the shipped rules.
fn promtool_rule_tests(tests: &str) {
    let test = temp_dir().join("alerts_test.yml");
    write(&test, &format!("rule_files: [\"{}\"]\nevaluation_interval: 30s\n{tests}", deploy("alerts.yml").display()));
    let out = Command::new(tool("promtool")).args(["test", "rules"]).arg(&test).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn promtool_accepts_rules_and_config() {
    let out = Command::new(tool("promtool")).args(["check", "rules"]).arg(deploy("alerts.yml")).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS: 10 rules found"), "{}", String::from_utf8_lossy(&out.stdout));
    let out = Command::new(tool("promtool")).args(["check", "config"]).arg(deploy("prometheus.yml")).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// Alert summaries print counts as whole numbers: `increase()` extrapolates (one message in
/// 5 minutes read "rejected 1.25" here before), checked with promtool's rule unit tests.
#[test]
fn alert_summaries_print_whole_numbers() {
    let alerts = std::fs::read_to_string(deploy("alerts.yml")).unwrap();
    for (i, _) in alerts.match_indices("{{ $value") {
        let rest = &alerts[i + "{{ $value".len()..];
        assert!(
            rest.starts_with(r#" | printf \"%.0f\" }}"#) || rest.starts_with(" | humanize }}"),
            "a summary prints a raw value: {}",
            &alerts[i..i + 40]
        );
    }
    promtool_rule_tests("tests:\n  - interval: 1m\n    input_series:\n      - series: 'paysign_verification_failures_total{instance=\"p:9091\",reason=\"signature\"}'\n        values: '5 5 5 5 5 6 6 6'\n    alert_rule_test:\n      - eval_time: 5m30s\n        alertname: PaysignVerificationFailures\n        exp_alerts:\n          - exp_labels: {severity: page, instance: \"p:9091\", reason: signature}\n            exp_annotations:\n              summary: \"paysign rejected 1 unverifiable platform messages (signature)\"\n              description: \"Check the platform public key / MD5 key, and whether messages are forged.\"\n");
}

/// The inbox's alerts fire on what they name, with the summaries an on-call engineer reads
/// (promtool's rule unit tests on the shipped rules).
#[test]
fn the_inbox_alerts_fire_on_age_dead_letters_and_failed_stores() {
    promtool_rule_tests(
        r#"tests:
  - interval: 1m
    input_series:
      - series: 'paysign_inbox_oldest_undelivered_age_seconds{instance="p:9091"}'
        values: '0 600 1200 1900 1960 2020 2080 2140 2200 2260'
      - series: 'paysign_inbox_notifications{instance="p:9091",state="dead"}'
        values: '0 0 2 2 2 2 2 2 2 2'
      - series: 'paysign_inbox_stored_total{instance="p:9091",result="failed"}'
        values: '0 0 0 0 0 0 0 3 3 3'
    alert_rule_test:
      - eval_time: 9m
        alertname: PaysignInboxOldestUndelivered
        exp_alerts:
          - exp_labels: {severity: page, instance: "p:9091"}
            exp_annotations:
              summary: "A payment notification acknowledged to the platform has waited 2.26ks for the internal target"
              description: "The target is down or refusing: GET /inbox and /inbox/dead on the admin port; nothing is lost while it waits (96 h by default)."
      - eval_time: 3m
        alertname: PaysignInboxDeadLetters
        exp_alerts:
          - exp_labels: {severity: page, instance: "p:9091"}
            exp_annotations:
              summary: "2 notifications were dead-lettered: the target never took them"
              description: "GET /inbox/dead lists them (never the payload); POST /inbox/redeliver?id=… once the target is fixed."
      - eval_time: 1m
        alertname: PaysignInboxDeadLetters
        exp_alerts: []
      - eval_time: 8m
        alertname: PaysignInboxStoreFailing
        exp_alerts:
          - exp_labels: {severity: page, instance: "p:9091"}
            exp_annotations:
              summary: "paysign cannot store notifications (3 in 5 m): they are not acknowledged and the platform retries"
"#,
    );
}

#[test]
fn a_real_prometheus_scrapes_paysign() {
    let prometheus = tool("prometheus");
    let s = Stack::start(Options::default());
    for i in 0..3 {
        assert_eq!(s.post_json(MD5_MERCHANT, &bindcard(&format!("PROM-{i}"))).status, 200);
    }
    let port = free_port();
    let cfg = s.dir.join("prometheus.yml");
    write(
        &cfg,
        &format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: paysign\n    static_configs:\n      - targets: [\"127.0.0.1:{}\"]\n", s.admin),
    );
    let _prom = spawn_cmd(
        Command::new(prometheus)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", s.dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}")),
        s.dir.join("prometheus.log"),
    );
    wait_ready(port, "/-/ready");
    let query = "/api/v1/query?query=paysign_requests_total%7Boutcome%3D%22verified%22%7D";
    let mut last = Value::Null;
    let found = eventually(30, || {
        let Ok(r) = try_request(port, "GET", query, &[], b"") else {
            return false;
        };
        last = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        last["data"]["result"].as_array().is_some_and(|a| !a.is_empty())
    });
    assert!(found, "Prometheus never returned paysign's series: {last}");
    let result = &last["data"]["result"][0];
    assert_eq!(result["metric"]["job"], "paysign");
    assert_eq!(result["metric"]["merchant"], MD5_MERCHANT);
    assert_eq!(result["metric"]["endpoint"], "bindcard_create");
    assert_eq!(result["value"][1], "3");
}

/// The Dockerfile and the Kubernetes manifest agree (user, ports, configuration path, image
/// command), and the binary needs only libraries the runtime stage (debian:bookworm-slim) has.
#[test]
fn the_container_image_and_the_manifest_agree() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let stages: Vec<&str> = dockerfile.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages, ["FROM rust:1-bookworm AS build", "FROM debian:bookworm-slim"]);
    let runtime = dockerfile.split("FROM debian:bookworm-slim").nth(1).unwrap();
    assert!(runtime.contains("USER 10001:10001"), "the runtime stage must not run as root");
    assert!(
        !runtime.contains("COPY conf") && !runtime.contains("COPY tests") && !dockerfile.contains(".pem"),
        "keys or configuration baked in"
    );
    assert!(runtime.contains("EXPOSE 8080 8081 9091"));
    assert!(runtime.contains(r#"CMD ["run", "-c", "/etc/paysign/config/paysign.yaml"]"#));
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    for excluded in ["target", "conf", "tests", ".git"] {
        assert!(ignore.lines().any(|l| l == excluded), ".dockerignore lacks {excluded}");
    }

    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&std::fs::read_to_string(deploy("kubernetes.yaml")).unwrap())
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsUser"].as_u64(), Some(10001));
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"].as_str(), Some("RuntimeDefault"));
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false));
    let c = &pod["containers"][0];
    assert_eq!(c["image"].as_str(), Some("registry.example/paysign:0.1.0"));
    let args: Vec<&str> = c["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args, ["run", "-c", "/etc/paysign/config/paysign.yaml"]);
    let ports: Vec<u64> = c["ports"].as_sequence().unwrap().iter().map(|p| p["containerPort"].as_u64().unwrap()).collect();
    assert_eq!(ports, [8080, 8081, 9091]);
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    let paths: Vec<&str> = mounts.iter().map(|m| m["mountPath"].as_str().unwrap()).collect();
    assert!(paths.contains(&"/etc/paysign/config") && paths.contains(&"/etc/paysign/keys"), "{paths:?}");
    // A subPath mount is a copy that never sees a ConfigMap update: directories only.
    assert!(mounts.iter().all(|m| m.get("subPath").is_none()), "{mounts:?}");
    // The keys volume holds every secret file the configuration names.
    let volumes = pod["volumes"].as_sequence().unwrap();
    let keys = volumes.iter().find(|v| v["name"] == "keys").unwrap();
    let items: Vec<&str> = keys["secret"]["items"].as_sequence().unwrap().iter().map(|i| i["path"].as_str().unwrap()).collect();
    assert_eq!(items, ["platform_public.pem", "merchant_private.pem", "md5_key", "admin_token", "inbox.key"]);
    // The inbox's database URL comes from a Secret (it carries a password), under the name the
    // configuration reads.
    let env = &c["env"][0];
    assert_eq!(env["name"].as_str(), Some("PAYSIGN_INBOX_URL"));
    assert_eq!(env["valueFrom"]["secretKeyRef"]["name"].as_str(), Some("paysign-inbox-db"));
    let db: Vec<serde_yaml::Value> =
        serde_yaml::Deserializer::from_str(&std::fs::read_to_string(deploy("kubernetes-postgres.yaml")).unwrap())
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
    let secret = db.iter().find(|d| d["kind"] == "Secret").unwrap();
    assert_eq!(secret["metadata"]["name"].as_str(), Some("paysign-inbox-db"));
    assert!(secret["stringData"]["url"].as_str().unwrap().starts_with("postgresql://paysign:"));
    let service = db.iter().find(|d| d["kind"] == "Service").unwrap();
    assert_eq!(service["spec"]["ports"][0]["port"].as_u64(), Some(5432));
    let only_paysign = db.iter().find(|d| d["kind"] == "NetworkPolicy").unwrap();
    assert_eq!(only_paysign["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app"].as_str(), Some("paysign"));
    // Egress: DNS, the platform and the notification target, nothing else.
    let egress = docs.iter().find(|d| d["metadata"]["name"] == "paysign-egress").unwrap();
    let ports: Vec<u64> = egress["spec"]["egress"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|r| r["ports"].as_sequence().unwrap().iter().map(|p| p["port"].as_u64().unwrap()))
        .collect();
    assert_eq!(ports, [53, 53, 443, 5432, 8000]);
    // The manifest's configuration listens on the ports the image exposes.
    let embedded: serde_yaml::Value = serde_yaml::from_str(docs[0]["data"]["paysign.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(embedded["listen"].as_str(), Some("0.0.0.0:8080"));
    assert_eq!(embedded["admin_listen"].as_str(), Some("0.0.0.0:9091"));
    assert_eq!(embedded["notify"]["listen"].as_str(), Some("0.0.0.0:8081"));

    // What the binary links: only glibc's libraries, which the slim runtime stage has.
    let out = Command::new("ldd").arg(env!("CARGO_BIN_EXE_paysign")).output().expect("ldd");
    let libs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|l| l.rsplit('/').next().unwrap().to_string())
        .filter(|l| !l.starts_with("linux-vdso") && !l.starts_with("ld-linux"))
        .collect();
    let mut libs = libs;
    libs.sort();
    assert_eq!(libs, ["libc.so.6", "libgcc_s.so.1", "libm.so.6"]);
}

/// conf/prod/paysign.yaml is the Kubernetes ConfigMap's file, and `paysign check` passes it in CI
/// without DNS: as shipped it fails only on the secret files absent here; with them (test keys,
/// owner-only), it passes, the names that do not resolve outside the cluster being warnings.
#[test]
fn the_production_config_is_the_configmap_and_passes_check_offline() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let prod = std::fs::read_to_string(root.join("conf/prod/paysign.yaml")).unwrap();
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&std::fs::read_to_string(deploy("kubernetes.yaml")).unwrap())
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let embedded = docs[0]["data"]["paysign.yaml"].as_str().unwrap();
    assert_eq!(embedded, prod, "the ConfigMap's paysign.yaml differs from conf/prod/paysign.yaml");

    // As shipped: exactly the five secret files under /etc/paysign/keys are missing.
    let dir = temp_dir();
    let shipped = dir.join("shipped.yaml");
    write(&shipped, embedded);
    let (code, stdout, stderr) = run_paysign(&["check", "-c", shipped.to_str().unwrap()], &[], "");
    assert_eq!(code, 1, "{stdout}");
    let p = shipped.display();
    let problems: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("warning: ")).collect();
    let missing = |setting: &str, file: &str| {
        format!("{p}: {setting} (/etc/paysign/keys/{file}): cannot read file: No such file or directory (os error 2)")
    };
    assert_eq!(
        problems,
        [
            missing("merchants[0].platform_public_key", "platform_public.pem"),
            missing("merchants[0].md5_key_file", "md5_key"),
            missing("merchants[1].platform_public_key", "platform_public.pem"),
            missing("merchants[1].merchant_private_key", "merchant_private.pem"),
            format!("{p}: notify.inbox.postgres_url_env: environment variable PAYSIGN_INBOX_URL is not set or not UTF-8"),
            missing("admin_token_file", "admin_token"),
            format!("{p}: 6 problem(s)"),
        ]
    );
    assert_eq!(stderr.lines().last(), Some("paysign: 1 configuration file(s) have problems"));

    // With the secrets in place: ok, two warnings (names that resolve only in the cluster).
    let keys = dir.join("keys");
    std::fs::rename(keys.join("md5.key"), keys.join("md5_key")).unwrap();
    write_secret(&keys.join("admin_token"), "an-admin-token-of-some-length\n");
    write(&keys.join("inbox.key"), &format!("{}\n", "7e".repeat(32)));
    std::fs::set_permissions(keys.join("inbox.key"), std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
    let placed = dir.join("placed.yaml");
    write(&placed, &embedded.replace("/etc/paysign/keys/", &format!("{}/", keys.display())));
    let url = [("PAYSIGN_INBOX_URL", "postgresql://paysign:secret@paysign-inbox-db:5432/paysign")];
    let (code, stdout, _) = run_paysign(&["check", "-c", placed.to_str().unwrap()], &url, "");
    assert_eq!(code, 0, "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    let p = placed.display();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with(&format!("warning: {p}: platform.base_url: cannot resolve openapi.platform.example now (")), "{stdout}");
    assert!(
        lines[1].starts_with(&format!(
            "warning: {p}: notify.routes[0].target: cannot resolve binding-service.payments.svc.cluster.local now ("
        )),
        "{stdout}"
    );
    assert_eq!(lines[2], format!("{p}: ok (gateway, 2 merchant(s), 2 warning(s))"));
}

//! The manifests of `deploy/` (README "Running on a fleet"): valid YAML, and consistent with
//! this program (the DaemonSet's arguments parse, its port is the one scraped, its
//! capabilities are the README's).

use clap::Parser as _;
use serde::Deserialize as _;
use serde_json::Value;

use crate::args::{Cli, Command};

fn documents(name: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}")))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_owned()
        })
        .collect()
}

#[test]
fn the_daemonset_runs_serve_with_the_documented_capabilities_and_mounts() {
    let docs = documents("daemonset.yaml");
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    assert_eq!(ds["apiVersion"], "apps/v1");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["hostPID"], true);
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"],
        ds["spec"]["template"]["metadata"]["labels"]
    );
    let container = &pod["containers"][0];

    // Its arguments are a valid `nettrace serve` command line, listening on its port.
    let args = strings(&container["args"]);
    let cli = Cli::try_parse_from(std::iter::once("nettrace".to_owned()).chain(args.clone()));
    let Ok(mut cli) = cli else {
        panic!("{args:?} do not parse: {:?}", cli.err());
    };
    let Some(Command::Serve(serve)) = cli.take_command() else {
        panic!("{args:?} is not `serve`");
    };
    let listen = serve.listen.expect("--listen");
    let port = &container["ports"][0];
    assert_eq!(port["containerPort"], u64::from(listen.port()));
    assert_eq!(port["name"], "metrics");

    // Exactly the README's capabilities for the tracepoint and fentry backends, plus
    // SYS_RESOURCE for Linux < 5.11; everything else dropped, not privileged.
    let security = &container["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    let mut add = strings(&security["capabilities"]["add"]);
    add.sort();
    assert_eq!(
        add,
        [
            "BPF",
            "DAC_READ_SEARCH",
            "NET_ADMIN",
            "PERFMON",
            "SYS_RESOURCE"
        ]
    );

    // The node's cgroup v2 root and tracefs, each at its own path.
    let mounts = container["volumeMounts"].as_array().expect("volumeMounts");
    let volumes = pod["volumes"].as_array().expect("volumes");
    for path in ["/sys/fs/cgroup", "/sys/kernel/tracing"] {
        let mount = mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("no mount at {path}"));
        let volume = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("no volume {}", mount["name"]));
        assert_eq!(volume["hostPath"]["path"], path);
    }
}

#[test]
fn prometheus_scrapes_the_daemonsets_metrics_port() {
    let docs = documents("prometheus.yaml");
    let job = &docs[0]["scrape_configs"][0];
    assert_eq!(job["job_name"], "nettrace");
    let relabels = job["relabel_configs"].as_array().expect("relabel_configs");
    let keeps: Vec<(String, String)> = relabels
        .iter()
        .filter(|r| r["action"] == "keep")
        .map(|r| {
            (
                strings(&r["source_labels"])[0].clone(),
                r["regex"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(keeps.contains(&(
        "__meta_kubernetes_pod_container_port_name".to_owned(),
        "metrics".to_owned()
    )));
    assert!(keeps.contains(&(
        "__meta_kubernetes_pod_label_app_kubernetes_io_name".to_owned(),
        "nettrace".to_owned()
    )));
}

#[test]
fn the_collector_pipeline_takes_otlp_http_metrics() {
    let docs = documents("otel-collector.yaml");
    let config = &docs[0];
    let endpoint = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
        .as_str()
        .expect("an OTLP/HTTP endpoint");
    assert!(endpoint.ends_with(":4318"), "{endpoint}");
    let pipeline = &config["service"]["pipelines"]["metrics"];
    assert_eq!(strings(&pipeline["receivers"]), ["otlp"]);
    for kind in ["processors", "exporters"] {
        for name in strings(&pipeline[kind]) {
            assert!(
                config[kind].get(&name).is_some(),
                "{kind} {name} is not defined"
            );
        }
    }
}

//! The deploy files hold together: every YAML parses, the config files in them load as Sluice
//! configs, and the Kubernetes objects agree with the config and the protocol (probe paths and
//! port, grace period, the Secret holding the key the upstream names, KEDA's stream and group),
//! the Dockerfile builds binaries that exist and runs them as a non-root user, and the sample
//! jobs are valid jobs. (No Docker engine or cluster is needed; building the image is left to CI
//! with Docker.)

use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;
use sluice_common::keys::{GROUP, QueueKeys};
use sluice_common::{Config, JobLimits};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every document of a YAML file.
fn yaml(path: &str) -> Vec<Value> {
    let text = read(path);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| {
            serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
        })
        .collect()
}

fn load_config(toml: &str) -> Config {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, toml).expect("write config");
    Config::load(Some(&path)).unwrap_or_else(|e| panic!("config does not load: {e}\n{toml}"))
}

fn port_of(listen: &str) -> u64 {
    listen
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("http_listen has a port")
}

#[test]
fn every_yaml_file_parses() {
    let mut n = 0;
    for dir in [
        "deploy",
        "deploy/k8s",
        "deploy/compose",
        "deploy/prometheus",
    ] {
        for entry in std::fs::read_dir(repo(dir)).expect("deploy dir") {
            let path = entry.expect("entry").path();
            if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yml" | "yaml")
            ) {
                let rel = path
                    .strip_prefix(repo(""))
                    .expect("in repo")
                    .to_string_lossy()
                    .to_string();
                assert!(!yaml(&rel).is_empty(), "{rel} is empty");
                n += 1;
            }
        }
    }
    assert!(n >= 10, "only {n} YAML files found");
}

#[test]
fn kubernetes_objects_agree_with_the_config_and_the_protocol() {
    let cm = &yaml("deploy/k8s/configmap.yaml")[0];
    let toml = cm["data"]["sluice.toml"]
        .as_str()
        .expect("sluice.toml in the ConfigMap");
    // Webhook secrets come from the Secret, as SLUICE__API__KEYS__<NAME>__WEBHOOK_SECRET.
    let with_secret = |toml: &str| {
        toml.replace(
            "webhook_hosts =",
            "webhook_secret = \"whsec_dGVzdA==\"\nwebhook_hosts =",
        )
    };
    let config = load_config(&with_secret(toml));
    let port = port_of(&config.worker.http_listen);

    let dep = &yaml("deploy/k8s/deployment.yaml")[0];
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["ports"][0]["containerPort"].as_u64(), Some(port));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let grace_s = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace period");
    assert!(
        config.worker.grace_ms + 5_000 <= grace_s * 1000,
        "worker.grace_ms {} leaves no time to hand jobs back within {grace_s} s",
        config.worker.grace_ms
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert!(c["resources"]["requests"].is_mapping() && c["resources"]["limits"].is_mapping());
    let env: Vec<&str> = c["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(env.contains(&"SLUICE__REDIS__URL"));
    for (name, u) in &config.upstreams {
        let key = u
            .auth_env
            .as_deref()
            .expect("the upstream's key comes from the environment");
        assert!(
            env.contains(&key),
            "upstream {name} reads {key}, which the pod does not set"
        );
    }

    let keda = yaml("deploy/k8s/keda-scaledobject.yaml");
    let trigger = &keda[0]["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "redis-streams");
    let queue = &config.worker.queues[0];
    assert_eq!(
        trigger["metadata"]["stream"].as_str(),
        Some(QueueKeys::new(queue).stream().as_str())
    );
    assert_eq!(trigger["metadata"]["consumerGroup"].as_str(), Some(GROUP));
    assert!(trigger["metadata"]["lagCount"].is_string());
    assert_eq!(keda[1]["kind"], "TriggerAuthentication");

    let svc = &yaml("deploy/k8s/service.yaml")[0];
    let sm = &yaml("deploy/k8s/servicemonitor.yaml")[0];
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(
        yaml("deploy/k8s/pdb.yaml")[0]["kind"],
        "PodDisruptionBudget"
    );

    // sluice-api: its own Deployment, Service and ConfigMap, agreeing on the port and probes.
    let api = yaml("deploy/k8s/api-deployment.yaml");
    let api_toml = api[2]["data"]["sluice.toml"].as_str().expect("sluice.toml");
    let api_config = load_config(&with_secret(api_toml));
    // Every key whose webhooks the API accepts is known to the workers, with its hosts and a
    // secret from the environment.
    for (name, key) in &api_config.api.keys {
        if key.webhook_hosts.is_empty() {
            continue;
        }
        let worker_key = config
            .api
            .keys
            .get(name)
            .unwrap_or_else(|| panic!("workers lack [api.keys.{name}]"));
        assert_eq!(worker_key.webhook_hosts, key.webhook_hosts, "key {name}");
        let var = format!("SLUICE__API__KEYS__{}__WEBHOOK_SECRET", name.to_uppercase());
        assert!(env.contains(&var.as_str()), "workers lack {var}");
    }
    assert!(!api_config.api.keys.is_empty(), "no API key configured");
    let pod = &api[0]["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(
        c["ports"][0]["containerPort"].as_u64(),
        Some(port_of(&api_config.api.listen))
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert!(
        api_config.api.relay_wait_ms / 1000
            < pod["terminationGracePeriodSeconds"]
                .as_u64()
                .expect("grace"),
        "a waiting request outlives the grace period"
    );
    assert_eq!(api[1]["kind"], "Service");
    assert_eq!(
        api[1]["spec"]["ports"][0]["targetPort"],
        c["ports"][0]["name"]
    );
    let secret = &yaml("deploy/k8s/secret.example.yaml")[0]["stringData"];
    for e in c["env"].as_sequence().expect("env") {
        let key = &e["valueFrom"]["secretKeyRef"]["key"];
        assert!(
            secret[key.as_str().expect("key")].is_string(),
            "{key:?} not in the example Secret"
        );
    }

    let kustomize = &yaml("deploy/k8s/kustomization.yaml")[0];
    for r in kustomize["resources"].as_sequence().expect("resources") {
        let file = r.as_str().expect("file name");
        assert!(
            repo(&format!("deploy/k8s/{file}")).exists(),
            "{file} is missing"
        );
    }
}

#[test]
fn compose_stack_and_its_files_hold_together() {
    let compose = &yaml("deploy/docker-compose.yml")[0];
    let services = &compose["services"];
    for s in ["redis", "mock", "worker", "api", "prometheus", "grafana"] {
        assert!(services[s].is_mapping(), "service {s} missing");
    }
    let redis_cmd = format!("{:?}", services["redis"]["command"]);
    assert!(redis_cmd.contains("appendonly"), "Redis without AOF");
    assert_eq!(services["worker"]["deploy"]["replicas"].as_u64(), Some(3));
    for v in services["worker"]["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .chain(
            services["prometheus"]["volumes"]
                .as_sequence()
                .into_iter()
                .flatten(),
        )
        .chain(
            services["grafana"]["volumes"]
                .as_sequence()
                .into_iter()
                .flatten(),
        )
    {
        let host = v
            .as_str()
            .expect("volume")
            .split(':')
            .next()
            .expect("host path");
        assert!(
            repo(&format!("deploy/{host}")).exists(),
            "compose mounts missing {host}"
        );
    }
    let config = load_config(&read("deploy/compose/sluice.toml"));
    let api_port = format!(
        "{}:{}",
        port_of(&config.api.listen),
        port_of(&config.api.listen)
    );
    assert_eq!(
        services["api"]["ports"][0].as_str(),
        Some(api_port.as_str())
    );
    let demo = &config.api.keys["demo"];
    assert_eq!(
        demo.sha256,
        sluice_producer::api::auth::sha256_hex("sk-sluice-compose-demo")
    );
    assert!(
        demo.upstreams
            .iter()
            .all(|u| config.upstreams.contains_key(u))
    );
    let prom = &yaml("deploy/compose/prometheus.yml")[0];
    let sd = &prom["scrape_configs"][0]["dns_sd_configs"][0];
    assert_eq!(
        sd["port"].as_u64(),
        Some(port_of(&config.worker.http_listen))
    );
    assert_eq!(prom["scrape_configs"][0]["job_name"], "sluice-worker");

    let defaults = sluice_producer::input::Defaults {
        queue: "default".into(),
        upstream: None,
        path: "/v1/chat/completions".into(),
        tenant: None,
        priority: None,
    };
    let limits = JobLimits::default();
    let mut n = 0;
    for line in read("deploy/compose/jobs/sample.jsonl").lines() {
        let job = sluice_producer::input::JobInput::parse(line)
            .and_then(|j| j.into_job(&defaults))
            .unwrap_or_else(|e| panic!("sample job: {e}: {line}"));
        assert!(config.upstreams.contains_key(&job.spec.upstream));
        job.prepare(&limits).expect("a valid job");
        n += 1;
    }
    assert!(n > 0);
}

#[test]
fn dockerfile_builds_real_binaries_as_non_root() {
    let docker = read("Dockerfile");
    assert!(docker.contains("USER 10001"), "runtime image runs as root");
    for bin in ["sluice-worker", "sluice", "sluice-api", "mock-model-api"] {
        assert!(docker.contains(&format!("--bin {bin}")), "{bin} not built");
    }
    let manifests =
        read("worker/Cargo.toml") + &read("producer/Cargo.toml") + &read("tests/Cargo.toml");
    for bin in ["sluice-worker", "sluice-api", "mock-model-api"] {
        assert!(
            manifests.contains(&format!("name = \"{bin}\"")),
            "no binary {bin}"
        );
    }
    assert!(repo("producer/src/bin/sluice/main.rs").exists());
}

//! `deploy/kubernetes`, with no cluster here: rendered by `kubectl kustomize` and validated
//! offline against Kubernetes' and KEDA's schemas (deploy/kubernetes/validate.mjs over the npm
//! packages scripts/test installs), and held to the product: every variable it sets is one
//! coexist reads, the workers never scale past the partitions, the grace period covers the
//! graceful stop, and the probes are the ones coexist serves.

use serde_json::Value;

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `kubectl kustomize deploy/kubernetes`, as YAML.
fn rendered() -> String {
    let out = std::process::Command::new("kubectl")
        .args(["kustomize", "deploy/kubernetes"])
        .current_dir(root())
        .output()
        .expect("kubectl (scripts/test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the validator over `yaml`: (passed, what it printed).
fn validate(yaml: &str) -> (bool, String) {
    use std::io::Write;
    let modules = std::env::var("COEXIST_TEST_K8S_MODULES").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/coexist/k8s-validator/node_modules")
    });
    let mut child = std::process::Command::new("node")
        .arg("deploy/kubernetes/validate.mjs")
        .current_dir(root())
        .env("NODE_PATH", modules)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn documents(yaml: &str) -> Vec<Value> {
    use yaml_rust2::YamlLoader;
    fn json(y: &yaml_rust2::Yaml) -> Value {
        use yaml_rust2::Yaml;
        match y {
            Yaml::Hash(h) => Value::Object(
                h.iter()
                    .map(|(k, v)| (k.as_str().unwrap_or_default().to_owned(), json(v)))
                    .collect(),
            ),
            Yaml::Array(a) => Value::Array(a.iter().map(json).collect()),
            Yaml::String(s) | Yaml::Real(s) => Value::String(s.clone()),
            Yaml::Integer(i) => Value::from(*i),
            Yaml::Boolean(b) => Value::Bool(*b),
            _ => Value::Null,
        }
    }
    YamlLoader::load_from_str(yaml)
        .unwrap()
        .iter()
        .map(json)
        .collect()
}

#[test]
fn the_kubernetes_base_renders_and_validates_against_kubernetes_and_keda_schemas() {
    let yaml = rendered();
    let (ok, said) = validate(&yaml);
    assert!(ok, "{said}");
    for kind in [
        "ConfigMap coexist",
        "Deployment coexist-ingress",
        "Deployment coexist-worker",
        "Deployment coexist-gate",
        "Deployment coexist-console",
        "Service coexist-ingress",
        "PodDisruptionBudget coexist-worker",
        "ScaledObject coexist-worker",
        "TriggerAuthentication coexist-rabbitmq",
    ] {
        let (k, name) = kind.split_once(' ').unwrap();
        assert!(
            said.lines()
                .any(|l| l.starts_with("valid ") && l.contains(k) && l.ends_with(name)),
            "{kind}: {said}"
        );
    }
    // The validator does refuse what is wrong (one broken field of each schema family).
    let broken = yaml.replacen("replicas: 2", "replicas: two", 1);
    assert!(!validate(&broken).0, "a Deployment with replicas: two");
    let broken = yaml.replace("maxReplicaCount: 16", "maxReplicaCount: sixteen");
    assert!(!validate(&broken).0, "a ScaledObject with a text count");
}

#[test]
fn the_kubernetes_base_sets_only_what_coexist_reads_and_fits_its_behaviour() {
    let docs = documents(&rendered());
    let of = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name}"))
            .clone()
    };
    let read: Vec<&str> = coexist::runtime::config::ENV
        .iter()
        .map(|(_, v)| *v)
        .collect();
    let config = of("ConfigMap", "coexist");
    let mut set: Vec<String> = config["data"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    for d in docs.iter().filter(|d| d["kind"] == "Deployment") {
        let pod = &d["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        for e in c["env"].as_array().into_iter().flatten() {
            set.push(e["name"].as_str().unwrap().to_owned());
        }
        // The grace period covers coexist's graceful stop (10 s).
        let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
        assert!(grace > 10, "{}: {grace}", d["metadata"]["name"]);
        // The probes are coexist's own paths.
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert!(
            c["resources"]["requests"]["memory"].is_string(),
            "requests set"
        );
    }
    for var in &set {
        assert!(
            read.contains(&var.as_str()),
            "{var} is set but coexist reads no such variable"
        );
    }
    // The workers scale on the inbound partitions, never past their count.
    let partitions: i64 = config["data"]["COEXIST_PARTITIONS"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let scaled = of("ScaledObject", "coexist-worker");
    assert_eq!(scaled["spec"]["maxReplicaCount"].as_i64(), Some(partitions));
    assert_eq!(scaled["spec"]["scaleTargetRef"]["name"], "coexist-worker");
    let trigger = &scaled["spec"]["triggers"][0]["metadata"];
    let ns = config["data"]["COEXIST_NAMESPACE"].as_str().unwrap();
    assert_eq!(
        trigger["queueName"].as_str(),
        Some(format!("{}\\.inbound\\.(e[0-9]+\\.)?[0-9]+", ns.replace('.', "\\.")).as_str()),
        "the namespace's partition queues, of every epoch (`{ns}.inbound.3`, `{ns}.inbound.e1.3`)"
    );
    // The webhook port serves no /metrics: Prometheus scrapes the admin port.
    let ingress = of("Deployment", "coexist-ingress");
    assert_eq!(
        ingress["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"],
        "9090"
    );
}

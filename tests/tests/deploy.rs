//! The deployment files, checked without a Docker engine or a cluster: `docker-compose.yml`,
//! the Kustomize overlays of `deploy/k8s/` (rendered by `kubectl kustomize`), the `Dockerfile`.
//!
//! Every variable a file sets must be one the service reads: each service's own config loader
//! runs on exactly the variables the file gives it (secrets replaced by well-formed
//! placeholders), must accept their values, and reports through [`Env::queried`] every name it
//! asked for. Every port, probe path and scaled consumer must exist in the code too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::config::Env;
use serde_json::Value;

/// The paths the ops listener serves for probes (common/src/ops.rs).
const PROBE_PATHS: &[&str] = &["/healthz", "/readyz"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// Every document of a YAML text, merge keys (`<<: *anchor`) applied, as JSON values.
fn yaml_documents(text: &str, what: &str) -> Vec<Value> {
    use serde::Deserialize;
    yaml_serde::Deserializer::from_str(text)
        .map(|document| {
            let mut value = yaml_serde::Value::deserialize(document)
                .unwrap_or_else(|err| panic!("{what} is not valid YAML: {err}"));
            value
                .apply_merge()
                .unwrap_or_else(|err| panic!("{what}: bad merge key: {err}"));
            serde_json::to_value(value).unwrap_or_else(|err| panic!("{what}: {err}"))
        })
        .filter(|value| !value.is_null())
        .collect()
}

/// A value that passes the service's own validation for a variable that comes from a Secret.
fn secret_placeholder(var: &str) -> String {
    match var {
        // base64 of 32 bytes.
        "SECRETS_KEY" | "SECRETS_KEY_PREVIOUS" => {
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".to_owned()
        }
        // What the example Secret holds: the services must accept it as it is.
        "NATS_URL" | "REDIS_URL" => {
            let documents = yaml_documents(
                &read("deploy/k8s/base/secret.example.yaml"),
                "secret.example.yaml",
            );
            let value = documents[0]["stringData"][var].as_str().expect(var);
            value.replace("<password>", "secret")
        }
        _ => "placeholder-secret-value-0123456789".to_owned(),
    }
}

/// What a service made of the variables a deployment file gives it.
struct Loaded {
    /// Every variable its loader asked for.
    read: BTreeSet<String>,
    /// Ports it listens on, by variable (`METRICS_ADDR` → 9100…).
    listeners: BTreeMap<String, u16>,
}

/// Runs `binary`'s configuration loader on `vars`; an error names the variable it refused.
fn load(binary: &str, vars: &BTreeMap<String, String>) -> Result<Loaded, String> {
    let env = Env::from_pairs(vars.clone());
    let mut listeners = BTreeMap::new();
    match binary {
        "ingress" => {
            let config = ingress::Config::from_env(&env).map_err(|e| e.to_string())?;
            listeners.insert("INGRESS_ADDR".into(), config.ingress_addr.port());
            listeners.insert("ADMIN_ADDR".into(), config.admin_addr.port());
            listeners.insert("METRICS_ADDR".into(), config.common.metrics_addr.port());
        }
        "dispatcher" => {
            let config = dispatcher::config::Config::from_env(&env).map_err(|e| e.to_string())?;
            listeners.insert("METRICS_ADDR".into(), config.common.metrics_addr.port());
        }
        "notifier" => {
            let config = notifier::config::Config::from_env(&env).map_err(|e| e.to_string())?;
            listeners.insert("METRICS_ADDR".into(), config.common.metrics_addr.port());
            if let Some(tools) = &config.tools {
                listeners.insert("TOOLS_ADDR".into(), tools.addr.port());
            }
        }
        "dingtalk-sim" => {
            // `dingtalk-sim serve` reads the log filter before its config (sim/src/cli.rs).
            env.get("RUST_LOG");
            let config = dingtalk_sim::SimConfig::from_env(&env).map_err(|e| e.to_string())?;
            listeners.insert("SIM_ADDR".into(), config.addr.port());
        }
        "echo-expert" => {
            // It reads std::env directly: its variables are the names in its source.
            let source = read("tests/expert/src/bin/echo-expert.rs");
            let read: BTreeSet<String> = source
                .split("std::env::var(\"")
                .skip(1)
                .filter_map(|rest| rest.split('"').next())
                .map(str::to_owned)
                .collect();
            let addr = vars.get("EXPERT_ADDR").ok_or("EXPERT_ADDR is not set")?;
            let addr: std::net::SocketAddr = addr.parse().map_err(|_| "bad EXPERT_ADDR")?;
            listeners.insert("EXPERT_ADDR".into(), addr.port());
            return Ok(Loaded { read, listeners });
        }
        other => return Err(format!("{other} is not a binary of the gateway")),
    }
    Ok(Loaded {
        read: env.queried(),
        listeners,
    })
}

/// Asserts that `binary` reads every variable in `vars` and returns what it loaded.
fn assert_reads_all(binary: &str, vars: &BTreeMap<String, String>, place: &str) -> Loaded {
    let loaded = load(binary, vars).unwrap_or_else(|err| panic!("{place}: {binary}: {err}"));
    let unknown: Vec<_> = vars
        .keys()
        .filter(|var| !loaded.read.contains(*var))
        .collect();
    assert!(
        unknown.is_empty(),
        "{place}: {binary} does not read {unknown:?}"
    );
    loaded
}

// ---------------------------------------------------------------------------------------------
// docker-compose.yml

/// Compose interpolation with an empty environment: `${X}`, `${X:-default}`, `${X-default}`;
/// `${X:?message}` and `${X?message}` are errors (a required variable), `$$` is a dollar.
fn interpolate(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
            let expr = &tail[..end];
            let default = expr
                .split_once(":-")
                .or_else(|| expr.split_once('-'))
                .map(|(_, default)| default);
            if expr.contains('?') {
                return Err(format!("{text:?} requires a variable to be set"));
            }
            out.push_str(default.unwrap_or(""));
            rest = &tail[end + 1..];
        } else {
            return Err(format!("bare $ in {text:?}: write $$ or ${{NAME}}"));
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn compose() -> Value {
    let documents = yaml_documents(&read("docker-compose.yml"), "docker-compose.yml");
    assert_eq!(documents.len(), 1, "docker-compose.yml is one document");
    documents.into_iter().next().expect("one document")
}

/// A compose service's environment, interpolated.
fn compose_env(service: &Value, name: &str) -> BTreeMap<String, String> {
    let Some(environment) = service.get("environment") else {
        return BTreeMap::new();
    };
    let map = environment
        .as_object()
        .unwrap_or_else(|| panic!("{name}: write environment as a mapping"));
    map.iter()
        .map(|(var, value)| {
            let raw = match value {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => panic!("{name}: {var} must be a string (quote numbers), not {other}"),
            };
            let value = interpolate(&raw).unwrap_or_else(|err| panic!("{name}: {var}: {err}"));
            (var.clone(), value)
        })
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| item.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn url_port_and_path(url: &str) -> (u16, String) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let port = authority
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("{url}: name the port"));
    (port, path.to_owned())
}

#[test]
fn compose_sets_only_variables_the_services_read_with_values_they_accept() {
    let compose = compose();
    let services = compose["services"].as_object().expect("services");
    let seed_script = read("deploy/demo/seed.sh");
    let stages = dockerfile_stages(&read("Dockerfile"));
    let mut ours = 0;
    for (name, service) in services {
        let Some(command) = service.get("command").map(strings) else {
            panic!("{name}: set command");
        };
        let target = service["build"]["target"].as_str();
        if target.is_none() {
            continue; // nats, redis: third-party images.
        }
        let target = target.expect("checked");
        assert!(
            stages.contains(target),
            "{name}: no Dockerfile stage {target}"
        );
        ours += 1;
        let vars = compose_env(service, name);
        let binary = command[0].as_str();
        if binary == "demo-seed" {
            for var in vars.keys() {
                assert!(
                    seed_script.contains(&format!("${{{var}")),
                    "demo-seed: deploy/demo/seed.sh does not read {var}"
                );
            }
            continue;
        }
        let loaded = assert_reads_all(binary, &vars, &format!("docker-compose.yml {name}"));
        let listening: BTreeSet<u16> = loaded.listeners.values().copied().collect();
        for mapping in strings(&service["ports"]) {
            let container: u16 = mapping
                .rsplit(':')
                .next()
                .and_then(|port| port.parse().ok())
                .unwrap_or_else(|| panic!("{name}: bad port mapping {mapping}"));
            assert!(
                listening.contains(&container),
                "{name}: publishes {container}, but listens on {listening:?}"
            );
        }
        let test = strings(&service["healthcheck"]["test"]);
        let url = test
            .iter()
            .find(|arg| arg.starts_with("http://"))
            .unwrap_or_else(|| panic!("{name}: the health check probes an http:// URL"));
        let (port, path) = url_port_and_path(url);
        assert!(listening.contains(&port), "{name}: health check on {port}");
        if test.contains(&"gatewayctl".to_owned()) {
            assert_eq!(test[..3], ["CMD", "gatewayctl", "probe"], "{name}");
            assert_eq!(Some(&port), loaded.listeners.get("METRICS_ADDR"), "{name}");
            assert!(PROBE_PATHS.contains(&path.as_str()), "{name}: {path}");
        }
    }
    assert_eq!(
        ours, 6,
        "ingress, dispatcher, notifier and the three demo services"
    );
    // Without the demo profile, only the gateway and its two dependencies start.
    let default: BTreeSet<&str> = services
        .iter()
        .filter(|(_, service)| service.get("profiles").is_none())
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(
        default,
        BTreeSet::from(["nats", "redis", "ingress", "dispatcher", "notifier"])
    );
    for name in ["dingtalk-sim", "echo-expert", "demo-seed"] {
        assert_eq!(strings(&services[name]["profiles"]), ["demo"], "{name}");
    }
    // JetStream and the append-only file, each on a named volume.
    assert!(strings(&services["nats"]["command"]).contains(&"-js".to_owned()));
    assert!(strings(&services["redis"]["command"]).contains(&"--appendonly".to_owned()));
    for (name, mount) in [("nats", "nats-data:/data"), ("redis", "redis-data:/data")] {
        assert!(strings(&services[name]["volumes"]).contains(&mount.to_owned()));
    }
}

#[test]
fn compose_interpolation_follows_compose_rules() {
    assert_eq!(interpolate("${A:-x}/${B-y}/${C}").unwrap(), "x/y/");
    assert_eq!(interpolate("$$HOME").unwrap(), "$HOME");
    assert!(interpolate("${A:?set A}").is_err());
    assert!(interpolate("$A").is_err());
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

fn kubectl() -> &'static str {
    let found = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found,
        "kubectl is not installed: scripts/test installs it (apt-get install kubernetes-client)"
    );
    "kubectl"
}

fn kustomize(dir: &str) -> Vec<Value> {
    let output = Command::new(kubectl())
        .args(["kustomize", &root().join(dir).to_string_lossy()])
        .output()
        .expect("kubectl runs");
    assert!(
        output.status.success(),
        "kubectl kustomize {dir} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    yaml_documents(&String::from_utf8_lossy(&output.stdout), dir)
}

fn by_kind<'a>(documents: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    documents.iter().filter(move |d| d["kind"] == kind)
}

fn name(document: &Value) -> &str {
    document["metadata"]["name"].as_str().unwrap_or_default()
}

/// A Kubernetes memory quantity (`512Mi`, `1Gi`, `256M`, bytes) in bytes.
fn quantity(value: &Value) -> u64 {
    let text = value.as_str().expect("a quantity string");
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    let (number, factor) = units
        .iter()
        .find_map(|(suffix, factor)| text.strip_suffix(suffix).map(|n| (n, *factor)))
        .unwrap_or((text, 1));
    number.parse::<u64>().expect("an integer quantity") * factor
}

fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|wanted| !wanted.is_empty() && wanted.iter().all(|(k, v)| &labels[k] == v))
}

/// The keys the example Secret documents.
fn secret_keys() -> BTreeSet<String> {
    let documents = yaml_documents(
        &read("deploy/k8s/base/secret.example.yaml"),
        "secret.example.yaml",
    );
    documents[0]["stringData"]
        .as_object()
        .expect("stringData")
        .keys()
        .cloned()
        .collect()
}

/// The environment of a container, with ConfigMap values resolved and secrets replaced by
/// placeholders.
fn container_env(container: &Value, documents: &[Value], place: &str) -> BTreeMap<String, String> {
    let secret_keys = secret_keys();
    let mut vars = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let map_name = source["configMapRef"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("{place}: only ConfigMaps in envFrom"));
        let map = by_kind(documents, "ConfigMap")
            .find(|d| name(d) == map_name)
            .unwrap_or_else(|| panic!("{place}: no ConfigMap {map_name}"));
        for (var, value) in map["data"].as_object().into_iter().flatten() {
            vars.insert(var.clone(), value.as_str().unwrap_or_default().to_owned());
        }
    }
    for entry in container["env"].as_array().into_iter().flatten() {
        let var = entry["name"].as_str().expect("env name").to_owned();
        let value = if let Some(value) = entry.get("value") {
            value
                .as_str()
                .unwrap_or_else(|| panic!("{place}: {var}: quote the value"))
                .to_owned()
        } else if let Some(secret) = entry["valueFrom"].get("secretKeyRef") {
            assert_eq!(secret["name"], "dingtalk-gateway", "{place}: {var}");
            let key = secret["key"].as_str().expect("key");
            assert_eq!(
                key, var,
                "{place}: the Secret key is named like the variable"
            );
            assert!(
                secret_keys.contains(key),
                "{place}: secret.example.yaml does not document {key}"
            );
            secret_placeholder(&var)
        } else {
            panic!("{place}: {var}: a value or a secretKeyRef")
        };
        vars.insert(var, value);
    }
    vars
}

fn check_overlay(dir: &str) -> Vec<Value> {
    let documents = kustomize(dir);
    let deployments: Vec<&Value> = by_kind(&documents, "Deployment").collect();
    let names: BTreeSet<&str> = deployments.iter().map(|d| name(d)).collect();
    assert_eq!(
        names,
        BTreeSet::from(["ingress", "dispatcher", "notifier"]),
        "{dir}"
    );
    let mut ports_by_deployment: BTreeMap<&str, (Value, BTreeMap<String, u16>)> = BTreeMap::new();
    let mut consumers: BTreeMap<&str, (String, String)> = BTreeMap::new();
    for deployment in &deployments {
        let deployment_name = name(deployment);
        let pod = &deployment["spec"]["template"];
        assert!(
            selects(
                &deployment["spec"]["selector"]["matchLabels"],
                &pod["metadata"]["labels"]
            ),
            "{dir} {deployment_name}: the selector matches its pods"
        );
        let containers = pod["spec"]["containers"].as_array().expect("containers");
        assert_eq!(containers.len(), 1, "{dir} {deployment_name}");
        let container = &containers[0];
        let place = format!("{dir} Deployment {deployment_name}");
        let binary = strings(&container["command"])[0].clone();
        assert_eq!(binary, deployment_name, "{place}: runs its own binary");
        let vars = container_env(container, &documents, &place);
        let loaded = assert_reads_all(&binary, &vars, &place);
        if binary == "dispatcher" {
            let config = dispatcher::config::Config::from_env(&Env::from_pairs(vars.clone()))
                .expect("loaded above");
            consumers.insert(
                "dispatcher",
                (common::bus::streams::EVENTS.into(), config.consumer),
            );
        }
        if binary == "notifier" {
            consumers.insert(
                "notifier",
                (
                    common::bus::streams::COMMANDS.into(),
                    notifier::worker::CONSUMER.into(),
                ),
            );
        }
        // Every named container port is a port the service listens on.
        let listening: BTreeSet<u16> = loaded.listeners.values().copied().collect();
        let mut named = BTreeMap::new();
        for port in container["ports"].as_array().expect("ports") {
            let number = port["containerPort"].as_u64().expect("containerPort") as u16;
            assert!(
                listening.contains(&number),
                "{place}: containerPort {number} is not one of {:?}",
                loaded.listeners
            );
            named.insert(port["name"].as_str().expect("port name").to_owned(), number);
        }
        let metrics = loaded.listeners["METRICS_ADDR"];
        for probe in ["readinessProbe", "livenessProbe"] {
            let http = &container[probe]["httpGet"];
            let path = http["path"].as_str().unwrap_or_default();
            assert!(PROBE_PATHS.contains(&path), "{place}: {probe} path {path}");
            let port = match &http["port"] {
                Value::String(port_name) => named[port_name.as_str()],
                other => other.as_u64().expect("port") as u16,
            };
            assert_eq!(port, metrics, "{place}: {probe} on the ops listener");
        }
        assert_eq!(
            container["readinessProbe"]["httpGet"]["path"], "/readyz",
            "{place}"
        );
        assert_eq!(
            container["livenessProbe"]["httpGet"]["path"], "/healthz",
            "{place}"
        );
        let annotations = &pod["metadata"]["annotations"];
        assert_eq!(
            annotations["prometheus.io/port"],
            metrics.to_string(),
            "{place}"
        );
        assert_eq!(annotations["prometheus.io/path"], "/metrics", "{place}");
        // Graceful shutdown: the grace period covers SHUTDOWN_TIMEOUT (and the preStop pause).
        let shutdown = humantime::parse_duration(&vars["SHUTDOWN_TIMEOUT"]).expect("duration");
        let pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or(0);
        let grace = pod["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("grace");
        assert!(
            grace > shutdown.as_secs() + pause,
            "{place}: terminationGracePeriodSeconds {grace} ≤ {pause} s preStop + {shutdown:?}"
        );
        assert!(
            container["resources"]["requests"]["cpu"].is_string()
                && container["resources"]["limits"]["memory"].is_string(),
            "{place}: resources"
        );
        assert_eq!(
            pod["spec"]["securityContext"]["runAsNonRoot"], true,
            "{place}"
        );
        // Spread constraints count this Deployment's pods (a mis-indented selector selects
        // nothing, or is refused by the API server).
        for constraint in pod["spec"]["topologySpreadConstraints"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert!(
                selects(
                    &constraint["labelSelector"]["matchLabels"],
                    &pod["metadata"]["labels"]
                ),
                "{place}: a topologySpreadConstraint that does not select its pods: {constraint}"
            );
        }
        // The autoscaler owns the replica count: a `replicas` here is reset by every apply.
        assert!(
            deployment["spec"].get("replicas").is_none(),
            "{place}: spec.replicas beside an autoscaler"
        );
        if binary == "ingress" {
            // Every callback in flight may hold its body, the parsed JSON and the event.
            let config =
                ingress::Config::from_env(&Env::from_pairs(vars.clone())).expect("loaded above");
            let bodies = (config.max_in_flight * ingress::webhook::MAX_BODY_BYTES * 3) as u64;
            let limit = quantity(&container["resources"]["limits"]["memory"]);
            assert!(
                limit >= bodies + (64 << 20),
                "{place}: a memory limit of {limit} B is under {} in-flight callbacks' bodies ({bodies} B) and a 64 MiB base",
                config.max_in_flight
            );
        }
        ports_by_deployment.insert(deployment_name, (pod["metadata"]["labels"].clone(), named));
    }
    for service in by_kind(&documents, "Service") {
        let selector = &service["spec"]["selector"];
        let Some((_, named)) = ports_by_deployment
            .values()
            .find(|(labels, _)| selects(selector, labels))
        else {
            continue; // the dev overlay's NATS and Redis.
        };
        for port in service["spec"]["ports"].as_array().expect("ports") {
            let target = &port["targetPort"];
            let known = match target {
                Value::String(port_name) => named.contains_key(port_name.as_str()),
                other => named
                    .values()
                    .any(|n| Some(u64::from(*n)) == other.as_u64()),
            };
            assert!(
                known,
                "{dir} Service {}: targetPort {target}",
                name(service)
            );
        }
    }
    for pdb in by_kind(&documents, "PodDisruptionBudget") {
        let selector = &pdb["spec"]["selector"]["matchLabels"];
        assert!(
            ports_by_deployment
                .values()
                .any(|(labels, _)| selects(selector, labels)),
            "{dir} PodDisruptionBudget {} selects no pod",
            name(pdb)
        );
    }
    let hpas: Vec<_> = by_kind(&documents, "HorizontalPodAutoscaler").collect();
    assert_eq!(hpas.len(), 1, "{dir}: one HPA, for the ingress");
    assert_eq!(hpas[0]["spec"]["scaleTargetRef"]["name"], "ingress");
    assert_eq!(hpas[0]["spec"]["metrics"][0]["resource"]["name"], "cpu");
    let scaled: BTreeMap<&str, &Value> = by_kind(&documents, "ScaledObject")
        .map(|s| {
            (
                s["spec"]["scaleTargetRef"]["name"]
                    .as_str()
                    .unwrap_or_default(),
                s,
            )
        })
        .collect();
    assert_eq!(
        scaled.keys().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from(["dispatcher", "notifier"]),
        "{dir}: KEDA scales the two consumers"
    );
    for (target, object) in scaled {
        let trigger = &object["spec"]["triggers"][0];
        assert_eq!(trigger["type"], "nats-jetstream", "{dir} {target}");
        let (stream, consumer) = &consumers[target];
        assert_eq!(
            trigger["metadata"]["stream"],
            stream.as_str(),
            "{dir} {target}"
        );
        assert_eq!(
            trigger["metadata"]["consumer"],
            consumer.as_str(),
            "{dir} {target}"
        );
        assert!(
            object["spec"]["minReplicaCount"].as_u64().unwrap_or(0) >= 1,
            "{dir} {target}: never scaled to zero"
        );
        // In a NATS cluster KEDA asks the consumer's leader at `{server}.{endpoint}`: only a
        // headless Service resolves those names (the chart's is `nats-headless`).
        let endpoint = trigger["metadata"]["natsServerMonitoringEndpoint"]
            .as_str()
            .unwrap_or_default();
        if !endpoint.contains("dingtalk-gateway-dev") {
            assert!(
                endpoint.starts_with("nats-headless."),
                "{dir} {target}: KEDA endpoint {endpoint}"
            );
        }
    }
    documents
}

#[test]
fn every_kustomize_overlay_renders_and_matches_the_code() {
    let dev = check_overlay("deploy/k8s/overlays/dev");
    let production = check_overlay("deploy/k8s/overlays/production");
    check_overlay("deploy/k8s/base");
    let namespaces = |documents: &[Value]| -> BTreeSet<String> {
        documents
            .iter()
            .filter_map(|d| d["metadata"]["namespace"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        namespaces(&dev),
        BTreeSet::from(["dingtalk-gateway-dev".to_owned()])
    );
    assert_eq!(
        namespaces(&production),
        BTreeSet::from(["dingtalk-gateway".to_owned()])
    );
    // Production: R3 streams, and the bus and Redis addresses come from the Secret.
    let config = by_kind(&production, "ConfigMap").next().expect("ConfigMap");
    assert_eq!(config["data"]["NATS_STREAM_REPLICAS"], "3");
    for deployment in by_kind(&production, "Deployment") {
        let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
        for var in ["NATS_URL", "REDIS_URL"] {
            let entry = env
                .as_array()
                .and_then(|entries| entries.iter().find(|e| e["name"] == var))
                .unwrap_or_else(|| panic!("production {}: {var}", name(deployment)));
            assert!(entry["valueFrom"]["secretKeyRef"].is_object(), "{var}");
        }
    }
    // No Secret with values is ever rendered: they are created out of band.
    for documents in [&dev, &production] {
        assert_eq!(by_kind(documents, "Secret").count(), 0);
    }
}

#[test]
fn the_reference_values_for_nats_and_the_secret_parse() {
    let values = yaml_documents(&read("deploy/k8s/nats/values.yaml"), "nats/values.yaml");
    assert_eq!(values[0]["config"]["cluster"]["replicas"], 3);
    assert_eq!(values[0]["config"]["jetstream"]["enabled"], true);
    assert!(secret_keys().contains("SECRETS_KEY"));
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

fn dockerfile_stages(dockerfile: &str) -> BTreeSet<String> {
    dockerfile
        .lines()
        .filter(|line| line.starts_with("FROM "))
        .filter_map(|line| line.split(" AS ").nth(1))
        .map(|stage| stage.trim().to_owned())
        .collect()
}

/// The binaries of the workspace, from `cargo metadata`.
fn workspace_binaries() -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .flat_map(|package| package["targets"].as_array().cloned().unwrap_or_default())
        .filter(|target| {
            target["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .filter_map(|target| target["name"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn the_dockerfile_builds_real_binaries_into_a_small_non_root_image() {
    let dockerfile = read("Dockerfile");
    let stages = dockerfile_stages(&dockerfile);
    for stage in ["planner", "builder", "runtime", "demo"] {
        assert!(stages.contains(stage), "stage {stage}");
    }
    // The dependency layer is built from the recipe before the sources are copied in.
    let builder = dockerfile
        .split("FROM chef AS builder")
        .nth(1)
        .and_then(|rest| rest.split("\nFROM ").next())
        .expect("builder stage");
    let cook = builder.find("cargo chef cook").expect("cook");
    let copy = builder.find("COPY . .").expect("sources");
    let build = builder.find("cargo build --release").expect("build");
    assert!(
        cook < copy && copy < build,
        "cook, then copy the sources, then build"
    );

    let binaries = workspace_binaries();
    let built: BTreeSet<String> = builder
        .split("--bin ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(!built.is_empty());
    for binary in &built {
        assert!(
            binaries.contains(binary),
            "--bin {binary} is no workspace binary"
        );
    }

    let runtime = dockerfile
        .split(" AS runtime")
        .nth(1)
        .and_then(|rest| rest.split("\nFROM ").next())
        .expect("runtime stage");
    let base = dockerfile
        .lines()
        .find(|line| line.ends_with(" AS runtime"))
        .expect("runtime FROM");
    assert!(
        base.contains("distroless"),
        "a small base without a shell: {base}"
    );
    let user = runtime
        .lines()
        .find_map(|line| line.strip_prefix("USER "))
        .expect("USER in the runtime stage");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("numeric uid");
    assert_ne!(uid, 0, "runs as non-root");
    for binary in ["ingress", "dispatcher", "notifier", "gatewayctl"] {
        assert!(
            runtime.contains(&format!("/out/{binary}")),
            "runtime has {binary}"
        );
    }
    for demo_only in ["dingtalk-sim", "echo-expert"] {
        assert!(
            !runtime.contains(demo_only),
            "{demo_only} stays out of production"
        );
    }

    // Exposed ports are the services' default listeners.
    let mut defaults = BTreeSet::new();
    for binary in ["ingress", "dispatcher", "notifier"] {
        let mut vars = BTreeMap::new();
        if binary == "notifier" {
            vars.insert("TOOLS_TOKEN".to_owned(), secret_placeholder("TOOLS_TOKEN"));
        }
        defaults.extend(
            load(binary, &vars)
                .expect("defaults load")
                .listeners
                .into_values(),
        );
    }
    let exposed: BTreeSet<u16> = runtime
        .lines()
        .filter_map(|line| line.strip_prefix("EXPOSE "))
        .flat_map(|ports| {
            ports
                .split_whitespace()
                .map(|p| p.parse::<u16>().expect("port"))
        })
        .collect();
    assert_eq!(exposed, defaults);

    let ignored: BTreeSet<&str> = read(".dockerignore").leak().lines().collect();
    for entry in ["target", ".git", ".env", ".data"] {
        assert!(ignored.contains(entry), ".dockerignore: {entry}");
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus rules and the Grafana dashboard

fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(root().join("deploy/prometheus"))
        .output()
        .unwrap_or_else(|err| {
            panic!("promtool is not installed ({err}): scripts/test installs it (apt-get install prometheus)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_alert_rules_pass_promtool_and_fire_on_their_test_series() {
    let checked = promtool(&["check", "rules", "alerts.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    promtool(&["test", "rules", "alerts.test.yml"]);
    let rules = yaml_documents(&read("deploy/prometheus/alerts.yml"), "alerts.yml");
    let alerts: BTreeSet<String> = rules[0]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|rule| rule["alert"].as_str().map(str::to_owned))
        .collect();
    // The alerts the runbook documents, one section each.
    let runbook = read("docs/operations.md");
    for alert in &alerts {
        assert!(
            runbook.contains(alert.as_str()),
            "docs/operations.md does not explain {alert}"
        );
    }
    assert_eq!(alerts.len(), 8, "{alerts:?}");
    yaml_documents(&read("deploy/prometheus/scrape.yml"), "scrape.yml");
}

/// Every `dingtalk_gateway_…` name in the services' source.
fn metric_names_in_code() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut dirs: Vec<PathBuf> = [
        "common/src",
        "ingress/src",
        "dispatcher/src",
        "notifier/src",
    ]
    .iter()
    .map(|dir| root().join(dir))
    .collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("source dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                names.extend(metric_names(
                    &std::fs::read_to_string(&path).expect("source"),
                ));
            }
        }
    }
    names
}

/// The `dingtalk_gateway_…` and `dingtalk_gateway:…` names in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("dingtalk_gateway") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Checks that every metric `exprs` name exists in the code (histogram series by their base
/// name) or is a recording rule of alerts.yml; returns the names used.
fn assert_metrics_exist(exprs: &[String], what: &str) -> BTreeSet<String> {
    let in_code = metric_names_in_code();
    let recorded = metric_names(
        &read("deploy/prometheus/alerts.yml")
            .lines()
            .filter(|line| line.trim_start().starts_with("- record:"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let mut used = BTreeSet::new();
    for expr in exprs {
        for name in metric_names(expr) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| in_code.contains(*base))
                .unwrap_or(&name)
                .to_owned();
            assert!(
                in_code.contains(&base) || recorded.contains(&base),
                "{what}: {name} is exported by no service and recorded by no rule"
            );
            used.insert(base);
        }
    }
    used
}

#[test]
fn the_rules_and_the_dashboard_use_only_metrics_the_services_export() {
    let rules = yaml_documents(&read("deploy/prometheus/alerts.yml"), "alerts.yml");
    let exprs: Vec<String> = rules[0]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .map(|rule| rule["expr"].as_str().expect("expr").to_owned())
        .collect();
    assert_metrics_exist(&exprs, "alerts.yml");

    let dashboard: Value =
        serde_json::from_str(&read("deploy/grafana/dingtalk-gateway.json")).expect("JSON");
    assert_eq!(dashboard["uid"], "dingtalk-gateway");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().expect("id")),
            "duplicate panel id"
        );
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        exprs.extend(
            targets
                .iter()
                .map(|t| t["expr"].as_str().expect("expr").to_owned()),
        );
    }
    let used = assert_metrics_exist(&exprs, "dingtalk-gateway.json");
    // What the dashboard is for: callbacks by result, publish latency, consumer lag, expert
    // latency, DingTalk calls by API and result, throttles, token refreshes, DLQ size.
    for wanted in [
        "dingtalk_gateway_ingress_callbacks_total",
        "dingtalk_gateway_ingress_publish_seconds",
        "dingtalk_gateway_bus_consumer_pending_messages",
        "dingtalk_gateway_dispatcher_expert_run_seconds",
        "dingtalk_gateway_notifier_dingtalk_calls_total",
        "dingtalk_gateway_notifier_throttles_total",
        "dingtalk_gateway_notifier_token_refreshes_total",
        "dingtalk_gateway_bus_stream_messages",
    ] {
        assert!(
            used.contains(wanted),
            "the dashboard does not show {wanted}"
        );
    }
}

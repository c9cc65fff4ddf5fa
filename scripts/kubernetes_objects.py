"""Checks what the Kubernetes schemas cannot: that the objects deploy/kubernetes renders to fit
together (the installer runs on the nodes the RuntimeClass schedules onto, a Service reaches the
port the app listens on, the hosts read their secrets from files that the Secrets hold, ...),
and agree with the images' Dockerfiles and the docs.

Usage: kubernetes_objects.py RENDERED_DIR [pods|cluster], where RENDERED_DIR holds `kubectl
kustomize` of each kustomization as NAME.yaml (kubernetes.yaml for deploy/kubernetes itself,
examples-hello.yaml for deploy/kubernetes/examples/hello, cluster-server.yaml for
deploy/kubernetes/cluster/server). `pods` checks the pod-per-app files (the RuntimeClass, the
installer, the examples), `cluster` the shared hosts (deploy/kubernetes/cluster); both by
default. Prints each problem; exits 1 if there is any. Needs PyYAML (scripts/check-kubernetes.sh
runs it in kubernetes-validate's venv, which has it).
"""

import base64
import pathlib
import re
import sys
import urllib.parse

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
INSTALLER = ROOT / "deploy/kubernetes/installer"
CLUSTER = ROOT / "deploy/kubernetes/cluster"

problems = []


def expect(condition, problem):
    if not condition:
        problems.append(problem)


def load(rendered, name):
    path = rendered / f"{name}.yaml"
    if not path.exists():
        problems.append(f"{name}: was not rendered")
        return {}
    return {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(path.read_text()) if o}


def one(objects, kind, where):
    found = [o for (k, _), o in objects.items() if k == kind]
    expect(len(found) == 1, f"{where}: {len(found)} {kind} objects, where one was expected")
    return found[0] if found else None


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def container_port(container, name_or_number):
    for port in container.get("ports", []):
        if name_or_number in (port.get("name"), port["containerPort"]):
            return port["containerPort"]
    return None


def check_runtime_class(runtime_class):
    expect(runtime_class["handler"] == "skiff",
           "RuntimeClass: handler must be `skiff`, the runtime name the installer adds to containerd")
    expect(runtime_class.get("scheduling", {}).get("nodeSelector") == {"skiff.dev/shim": "installed"},
           "RuntimeClass: scheduling.nodeSelector must be skiff.dev/shim: installed")


def check_installer(objects, where, action, node_selector):
    daemon_set = one(objects, "DaemonSet", where)
    namespace = one(objects, "Namespace", where)
    config_map = one(objects, "ConfigMap", where)
    if not (daemon_set and namespace and config_map):
        return
    pod = daemon_set["spec"]["template"]["spec"]
    expect(pod.get("nodeSelector") == node_selector,
           f"{where}: the installer's nodeSelector {pod.get('nodeSelector')} is not the RuntimeClass's "
           f"{node_selector}: skiff Pods would land on nodes without the shim")
    expect(pod.get("hostPID") is True, f"{where}: the installer needs hostPID to nsenter into PID 1")
    for obj in (daemon_set, config_map):
        expect(obj["metadata"].get("namespace") == namespace["metadata"]["name"],
               f"{where}: {obj['kind']} is not in namespace {namespace['metadata']['name']}")
    (init,) = pod["initContainers"]
    expect(init.get("securityContext", {}).get("privileged") is True, f"{where}: the install container must be privileged")
    command = init["command"]
    # The script's path in the image, and the host root where the DaemonSet mounts /.
    expect(command[0] == "/opt/skiff/skiff-node-install.sh", f"{where}: runs {command[0]}, not the image's script")
    host_volumes = [v["name"] for v in pod["volumes"] if v.get("hostPath", {}).get("path") == "/"]
    mounts = {m["name"]: m["mountPath"] for m in init.get("volumeMounts", [])}
    host = command[command.index("--host") + 1] if "--host" in command else "/host"
    expect(any(mounts.get(v) == host for v in host_volumes),
           f"{where}: the node's / is not mounted at {host}, where the script looks for it")
    expect(command[-1] == "$(SKIFF_ACTION)", f"{where}: the script's last argument must be $(SKIFF_ACTION)")
    ref = env_of(init).get("SKIFF_ACTION", {}).get("valueFrom", {}).get("configMapKeyRef", {})
    expect(ref.get("name") == config_map["metadata"]["name"],
           f"{where}: SKIFF_ACTION comes from ConfigMap {ref.get('name')}, which this render does not have")
    expect(config_map.get("data", {}).get(ref.get("key")) == action,
           f"{where}: the installer's action is {config_map.get('data')}, not {action}")
    images = {c["image"] for c in pod["initContainers"] + pod["containers"]}
    expect(len(images) == 1, f"{where}: the installer's containers use different images {images}")


def check_image_layout():
    """The DaemonSet runs /opt/skiff/skiff-node-install.sh, whose default shim is
    /opt/skiff/containerd-shim-skiff-v1: the Dockerfile must put both there."""
    dockerfile = (INSTALLER / "Dockerfile").read_text()
    copies = re.findall(r"^COPY\s.*\s(\S+)$", dockerfile, re.MULTILINE)
    for path in ("/opt/skiff/skiff-node-install.sh", "/opt/skiff/containerd-shim-skiff-v1"):
        expect(path in copies, f"installer/Dockerfile: copies nothing to {path}")
    script = (INSTALLER / "skiff-node-install.sh").read_text()
    expect("shim=${SKIFF_SHIM:-/opt/skiff/containerd-shim-skiff-v1}" in script,
           "skiff-node-install.sh: its default shim is not /opt/skiff/containerd-shim-skiff-v1")
    expect("cargo build --release --locked -p containerd-shim-skiff" in dockerfile,
           "installer/Dockerfile: does not build the containerd-shim-skiff package")


def check_docs():
    """docs/kubernetes.md shows operators the same table the installer adds, for both config
    versions."""
    docs = (ROOT / "docs/kubernetes.md").read_text()
    script = (INSTALLER / "skiff-node-install.sh").read_text()
    tables = re.findall(r"^\s*[23]\) table='([^']+)' ;;$", script, re.MULTILINE)
    expect(len(tables) == 2, "skiff-node-install.sh: did not find its two runtime tables")
    for table in tables:
        expect(f"[{table}]" in docs, f"docs/kubernetes.md: does not show the table [{table}]")
    for line in re.findall(r"^    '(  \w+ = [^']+)'", script, re.MULTILINE):
        expect(line in docs, f"docs/kubernetes.md: does not show `{line.strip()}`")


def pod_templates(objects):
    for (kind, name), obj in objects.items():
        if kind in ("Deployment", "Job"):
            yield f"{kind} {name}", obj, obj["spec"]["template"]


def check_example(objects, where, runtime_class):
    templates = list(pod_templates(objects))
    expect(templates, f"{where}: has no Deployment or Job")
    for what, obj, template in templates:
        spec = template["spec"]
        expect(spec.get("runtimeClassName") == runtime_class["metadata"]["name"],
               f"{where}: {what} does not say runtimeClassName: {runtime_class['metadata']['name']}")
        for container in spec["containers"]:
            # The kustomization's `images` entry replaces the placeholder name with a reference.
            expect("/" in container["image"], f"{where}: {what} runs image {container['image']!r}, not a registry reference")
            expect("memory" in container.get("resources", {}).get("limits", {}),
                   f"{where}: {what} has no memory limit, which caps the guest's memory")
        if obj["kind"] == "Job":
            expect(spec.get("restartPolicy") in ("Never", "OnFailure"), f"{where}: {what} must not restart Always")
            continue
        (container,) = spec["containers"]
        env = env_of(container)
        port = int(env.get("SKIFF_PORT", {}).get("value", 80))
        expect(container_port(container, "http") == port,
               f"{where}: {what} listens on {port} (SKIFF_PORT) but its port `http` is {container_port(container, 'http')}")
        for probe in ("readinessProbe", "livenessProbe"):
            probe_port = container.get(probe, {}).get("httpGet", {}).get("port")
            expect(container_port(container, probe_port) == port, f"{where}: {what}'s {probe} is not on port {port}")
        if "SKIFF_METRICS_PORT" in env:
            metrics = int(env["SKIFF_METRICS_PORT"]["value"])
            expect(container_port(container, "metrics") == metrics,
                   f"{where}: {what} serves metrics on {metrics} but its port `metrics` says otherwise")
        expect(spec.get("terminationGracePeriodSeconds"), f"{where}: {what} gives no time to drain on SIGTERM")

    deployments = {name: obj for (kind, name), obj in objects.items() if kind == "Deployment"}
    for (kind, name), obj in objects.items():
        if kind == "Service":
            selector = obj["spec"]["selector"]
            targets = [d for d in deployments.values()
                       if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
            expect(targets, f"{where}: Service {name} selects no Deployment's Pods")
            for target in targets:
                (container,) = target["spec"]["template"]["spec"]["containers"]
                for port in obj["spec"]["ports"]:
                    expect(container_port(container, port["targetPort"]) is not None,
                           f"{where}: Service {name} sends to port {port['targetPort']}, which the Pods do not have")
        if kind == "HorizontalPodAutoscaler":
            target = deployments.get(obj["spec"]["scaleTargetRef"]["name"])
            expect(target is not None, f"{where}: HPA {name} scales a Deployment this render does not have")
            if target:
                expect("replicas" not in target["spec"],
                       f"{where}: the HPA sets the replica count, but the Deployment fixes it too")
                for container in target["spec"]["template"]["spec"]["containers"]:
                    expect("cpu" in container.get("resources", {}).get("requests", {}),
                           f"{where}: HPA {name} scales on CPU use, which needs a CPU request")


# The shared hosts: deploy/kubernetes/cluster.

NAMESPACE = "skiff-cluster"
# The Secrets the hosts and the bundled Redis read, with their keys. server/ and redis/ make none
# of them: the operator does (docs/kubernetes.md), or example/'s secretGenerator.
OPERATOR_SECRETS = {
    "skiff-cluster": {"admin-token", "redis-url"},
    "skiff-api-tls": {"tls.crt", "tls.key"},
    "skiff-redis": {"password"},
}
# The server's file flags, and the Secret key each file must hold.
SECRET_FILES = {
    "--admin-token-file": ("skiff-cluster", "admin-token"),
    "--api-tls-cert": ("skiff-api-tls", "tls.crt"),
    "--api-tls-key": ("skiff-api-tls", "tls.key"),
}


def secret_name(name):
    """The Secret a reference means: kustomize's secretGenerator adds a hash of ten letters and
    digits to the name it was given (skiff-cluster-bg5gckdckt)."""
    match = re.fullmatch(r"(.+)-[a-z0-9]{10}", name)
    return match.group(1) if match and match.group(1) in OPERATOR_SECRETS else name


def workloads(objects):
    return [(f"{kind} {name}", obj) for (kind, name), obj in objects.items() if kind in ("Deployment", "StatefulSet")]


def match_labels(selector, where):
    expect(not selector.get("matchExpressions"), f"{where}: a selector with matchExpressions, which this check does not read")
    return selector.get("matchLabels", {})


def selects(labels, workload):
    """Whether a selector's labels pick the workload's Pods."""
    return bool(labels) and labels.items() <= workload["spec"]["template"]["metadata"].get("labels", {}).items()


def has_port(workload, port):
    return any(container_port(c, port) is not None for c in workload["spec"]["template"]["spec"]["containers"])


def decoded(secret, key):
    if key in secret.get("stringData", {}):
        return secret["stringData"][key]
    return base64.b64decode(secret.get("data", {}).get(key, "")).decode()


def flags(args):
    """`--name=value` and `--name value` of a command line, by name (a flag alone: True)."""
    found, rest = {}, list(args)
    while rest:
        arg = rest.pop(0)
        if not arg.startswith("--"):
            continue
        if "=" in arg:
            name, value = arg.split("=", 1)
        elif rest and not rest[0].startswith("--"):
            name, value = arg, rest.pop(0)
        else:
            name, value = arg, True
        found[name] = value
    return found


def expand(value, env):
    """What the kubelet makes of $(NAME) in an argument: the container's variable NAME."""
    if not isinstance(value, str):
        return value
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), {}).get("value", m.group(0)), value)


def seconds(duration):
    match = re.fullmatch(r"(\d+)(ms|s|m)", str(duration))
    if not match:
        return None
    return int(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[match.group(2)]


def secret_refs(template):
    """(Secret, key) of every Secret a Pod reads; key None for a whole Secret."""
    spec = template["spec"]
    for container in spec.get("initContainers", []) + spec["containers"]:
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                yield ref["name"], ref["key"]
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                yield source["secretRef"]["name"], None
    for volume in spec.get("volumes", []):
        sources = volume.get("projected", {}).get("sources", [])
        if "secret" in volume:
            sources = [{"secret": {"name": volume["secret"]["secretName"], **volume["secret"]}}]
        for source in sources:
            secret = source.get("secret")
            if secret:
                for item in secret.get("items") or [{"key": None}]:
                    yield secret["name"], item["key"]


def secret_files(spec, container):
    """Path → (Secret, key) of every file a container sees from a Secret."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    files = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        sources = volume.get("projected", {}).get("sources", [])
        if "secret" in volume:
            sources = [{"secret": {"name": volume["secret"]["secretName"], **volume["secret"]}}]
        for source in sources:
            secret = source.get("secret")
            if not secret:
                continue
            name = secret_name(secret["name"])
            items = secret.get("items") or [{"key": k, "path": k} for k in OPERATOR_SECRETS.get(name, ())]
            for item in items:
                files[f"{mount['mountPath'].rstrip('/')}/{item['path']}"] = (name, item["key"])
    return files


def check_namespace(objects, where):
    for (kind, name), obj in objects.items():
        if kind == "Namespace":
            expect(name == NAMESPACE, f"{where}: makes namespace {name}, not {NAMESPACE}")
            expect(obj["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") == "restricted",
                   f"{where}: namespace {name} does not enforce the restricted Pod Security level")
        else:
            expect(obj["metadata"].get("namespace") == NAMESPACE, f"{where}: {kind} {name} is not in namespace {NAMESPACE}")


def check_pod(what, obj, where):
    """The restricted Pod Security level and the rest every Pod here keeps to."""
    spec = obj["spec"]["template"]["spec"]
    pod = spec.get("securityContext", {})
    expect(spec.get("automountServiceAccountToken") is False, f"{where}: {what} mounts a service account token it never uses")
    expect(spec.get("enableServiceLinks") is False,
           f"{where}: {what} gets a variable per Service (SKIFF_API_PORT, ...), in the names of skiff's settings")
    volumes = {v["name"] for v in spec.get("volumes", [])}
    volumes |= {t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])}
    for container in spec.get("initContainers", []) + spec["containers"]:
        name = f"{what}, container {container['name']}"
        own = container.get("securityContext", {})
        expect(own.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, f"{where}: {name} may run as root")
        expect(own.get("runAsUser", pod.get("runAsUser")) not in (None, 0), f"{where}: {name} has no non-root runAsUser")
        seccomp = own.get("seccompProfile", pod.get("seccompProfile", {}))
        expect(seccomp.get("type") == "RuntimeDefault", f"{where}: {name} has no RuntimeDefault seccomp profile")
        expect(own.get("allowPrivilegeEscalation") is False, f"{where}: {name} allows privilege escalation")
        expect(own.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: {name} keeps capabilities")
        expect(own.get("readOnlyRootFilesystem") is True, f"{where}: {name} may write its root file system")
        resources = container.get("resources", {})
        expect("memory" in resources.get("limits", {}), f"{where}: {name} has no memory limit")
        expect("cpu" in resources.get("requests", {}), f"{where}: {name} has no CPU request")
        for mount in container.get("volumeMounts", []):
            expect(mount["name"] in volumes, f"{where}: {name} mounts volume {mount['name']}, which the Pod does not have")
        for probe in ("livenessProbe", "readinessProbe"):
            expect(probe in container, f"{where}: {name} has no {probe}")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            for handler in ("httpGet", "tcpSocket", "grpc"):
                port = container.get(probe, {}).get(handler, {}).get("port")
                if port is not None:
                    expect(container_port(container, port) is not None,
                           f"{where}: {name}'s {probe} asks port {port}, which the container does not have")


def check_secret_refs(objects, where, complete):
    """Every Secret key a Pod reads is in the render's Secret, or (complete=False) is one the docs
    tell the operator to make. Returns the Secrets and keys read that the render does not make."""
    secrets = {name: obj for (kind, name), obj in objects.items() if kind == "Secret"}
    missing = {}
    for what, obj in workloads(objects):
        for name, key in secret_refs(obj["spec"]["template"]):
            if name in secrets:
                keys = set(secrets[name].get("data", {})) | set(secrets[name].get("stringData", {}))
                expect(key is None or key in keys, f"{where}: {what} reads key {key} of Secret {name}, which has {sorted(keys)}")
            else:
                expect(not complete, f"{where}: {what} reads Secret {name}, which this render does not make")
                expect(key in OPERATOR_SECRETS.get(name, ()),
                       f"{where}: {what} reads key {key} of Secret {name}, which is not among those the operator makes")
                missing.setdefault(name, set()).add(key)
    return missing


def check_services(objects, where):
    for (kind, name), service in objects.items():
        if kind != "Service":
            continue
        targets = [(w, o) for w, o in workloads(objects) if selects(service["spec"].get("selector", {}), o)]
        expect(targets, f"{where}: Service {name} selects no Pods of this render")
        for what, target in targets:
            for port in service["spec"]["ports"]:
                target_port = port.get("targetPort", port["port"])
                expect(has_port(target, target_port),
                       f"{where}: Service {name} sends to port {target_port}, which {what}'s containers do not have")
    for what, obj in workloads(objects):
        if obj["kind"] != "StatefulSet":
            continue
        service = objects.get(("Service", obj["spec"].get("serviceName")))
        expect(service is not None, f"{where}: {what}'s serviceName {obj['spec'].get('serviceName')} is no Service of this render")
        if service:
            expect(service["spec"].get("clusterIP") == "None", f"{where}: {what}'s Service is not headless (clusterIP: None)")
            expect(selects(service["spec"].get("selector", {}), obj), f"{where}: {what}'s Service does not select its Pods")


def check_scaling(objects, where):
    for (kind, name), obj in objects.items():
        if kind == "PodDisruptionBudget":
            labels = match_labels(obj["spec"]["selector"], where)
            targets = [w for w, o in workloads(objects) if selects(labels, o)]
            expect(targets == ["Deployment skiff-server"], f"{where}: PodDisruptionBudget {name} covers {targets}, not the hosts")
            expect(obj["spec"].get("maxUnavailable") == 1, f"{where}: PodDisruptionBudget {name} lets more than one host go at once")
        if kind == "HorizontalPodAutoscaler":
            ref = obj["spec"]["scaleTargetRef"]
            target = objects.get((ref["kind"], ref["name"]))
            expect(target is not None and ref["name"] == "skiff-server",
                   f"{where}: HPA {name} scales {ref['kind']} {ref['name']}, not this render's hosts")
            if target:
                expect("replicas" not in target["spec"], f"{where}: the HPA sets the hosts' count, but the Deployment fixes it too")
            expect(obj["spec"].get("minReplicas", 1) >= 2,
                   f"{where}: HPA {name} may leave one host, which the PodDisruptionBudget then lets go")


def check_network_policies(objects, where, pods):
    """`pods`: the workloads a policy may be about (this render's, and those of server/ and redis/,
    which are applied beside it)."""
    for (kind, name), policy in objects.items():
        if kind != "NetworkPolicy":
            continue
        labels = match_labels(policy["spec"]["podSelector"], where)
        targets = [(w, o) for w, o in pods if selects(labels, o)]
        expect(targets, f"{where}: NetworkPolicy {name} applies to no Pods of the shared hosts")
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                for what, target in targets:
                    expect(has_port(target, port["port"]), f"{where}: NetworkPolicy {name} opens port {port['port']}, which {what} does not have")
            for peer in rule.get("from", []):
                # A peer by its Pods' labels alone is in the policy's own namespace: one of ours.
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    peer_labels = match_labels(peer["podSelector"], where)
                    expect(any(selects(peer_labels, o) for _, o in pods),
                           f"{where}: NetworkPolicy {name} lets in Pods labelled {peer_labels}, which none of ours is")


def check_server(objects, where):
    deployment = objects.get(("Deployment", "skiff-server"))
    expect(deployment is not None, f"{where}: no Deployment skiff-server")
    if not deployment:
        return
    spec = deployment["spec"]["template"]["spec"]
    expect(len(spec["containers"]) == 1, f"{where}: the hosts' Pods have {len(spec['containers'])} containers, not one")
    container = spec["containers"][0]
    env = env_of(container)
    args = container.get("args", [])
    expect(args[:1] == ["server"], f"{where}: the hosts run `skiff {' '.join(args[:1])}`, not `skiff server`")
    given = {name: expand(value, env) for name, value in flags(args).items()}
    for flag, port_name in (("--listen", "http"), ("--api-listen", "api")):
        host, _, port = str(given.get(flag, "")).rpartition(":")
        expect(host == "0.0.0.0", f"{where}: {flag} is {given.get(flag)}, not on every address of the Pod (0.0.0.0)")
        expect(port.isdigit() and container_port(container, port_name) == int(port),
               f"{where}: {flag} {given.get(flag)} is not the container's port `{port_name}`")
    # What the server writes: its data folder and /tmp, each an emptyDir with a size limit.
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {m["mountPath"]: volumes.get(m["name"], {}) for m in container.get("volumeMounts", [])}
    for path in (given.get("--data"), "/tmp"):
        expect(mounts.get(path, {}).get("emptyDir", {}).get("sizeLimit"),
               f"{where}: {path} is not an emptyDir with a sizeLimit (the root file system is read-only)")
    files = secret_files(spec, container)
    for flag, (secret, key) in SECRET_FILES.items():
        expect(files.get(given.get(flag)) == (secret, key),
               f"{where}: {flag} {given.get(flag)} is not a file of key {key} of Secret {secret} (files: {files})")
    ref = env.get("SKIFF_CLUSTER", {}).get("valueFrom", {}).get("secretKeyRef", {})
    expect((secret_name(ref.get("name", "")), ref.get("key")) == ("skiff-cluster", "redis-url"),
           f"{where}: SKIFF_CLUSTER does not come from key redis-url of Secret skiff-cluster")
    expect("--cluster" not in given, f"{where}: --cluster puts the Redis URL (and its password) in the Pod spec")
    expect(env.get("SKIFF_HOST_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
           f"{where}: SKIFF_HOST_ID is not the Pod's name")
    api_port = container_port(container, "api")
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet", {})
        expect(get.get("path") == path and get.get("scheme") == "HTTPS" and container_port(container, get.get("port")) == api_port,
               f"{where}: the hosts' {probe} is not GET {path} over HTTPS on the management port")
    # Drain: the preStop sleep, then after SIGTERM the server's not-ready wait and --shutdown-grace,
    # all before the kubelet's SIGKILL.
    grace = seconds(given.get("--shutdown-grace", "10s"))
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    expect(pre_stop > 0, f"{where}: no preStop sleep, so endpoints may still send requests after the server stops accepting")
    expect(grace is not None and spec.get("terminationGracePeriodSeconds", 30) >= pre_stop + grace + 10,
           f"{where}: terminationGracePeriodSeconds {spec.get('terminationGracePeriodSeconds', 30)} leaves under 10 s over "
           f"the preStop sleep ({pre_stop} s) and --shutdown-grace ({given.get('--shutdown-grace')})")
    services = {name: obj for (kind, name), obj in objects.items() if kind == "Service"}
    for name, port, target in (("skiff-apps", 80, "http"), ("skiff-api", 443, "api")):
        ports = [(p["port"], p.get("targetPort")) for p in services.get(name, {}).get("spec", {}).get("ports", [])]
        expect((port, target) in ports, f"{where}: Service {name} does not send port {port} to the hosts' port `{target}`")
    expect(services.get("skiff-api", {}).get("spec", {}).get("type", "ClusterIP") == "ClusterIP",
           f"{where}: the management API's Service is not ClusterIP (exposing it is the operator's choice)")
    domain = given.get("--domain")
    for (kind, name), ingress in objects.items():
        if kind != "Ingress":
            continue
        for rule in ingress["spec"].get("rules", []):
            expect(rule.get("host") == f"*.{domain}", f"{where}: Ingress {name} serves {rule.get('host')}, but the apps are at NAME.{domain}")
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"]["service"]
                ports = services.get(backend["name"], {}).get("spec", {}).get("ports", [])
                port = backend["port"].get("name", backend["port"].get("number"))
                expect(any(port in (p.get("name"), p["port"]) for p in ports),
                       f"{where}: Ingress {name} sends to {backend['name']}:{port}, which this render does not have")
                expect(backend["name"] == "skiff-apps", f"{where}: Ingress {name} sends the apps' traffic to {backend['name']}")
    check_server_image(container, spec, where)


def check_server_image(container, spec, where):
    """The Deployment runs the image deploy/kubernetes/cluster/Dockerfile makes."""
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    expect(re.search(r"cargo build --release --locked -p skiff\s", dockerfile),
           "cluster/Dockerfile: does not build the skiff package")
    expect(re.search(r"^COPY --from=build \S+ /usr/local/bin/skiff$", dockerfile, re.MULTILINE),
           "cluster/Dockerfile: copies nothing to /usr/local/bin/skiff")
    expect(re.search(r'^ENTRYPOINT \["/usr/local/bin/skiff"\]$', dockerfile, re.MULTILINE),
           "cluster/Dockerfile: its entrypoint is not /usr/local/bin/skiff")
    expect("command" not in container, f"{where}: the hosts' container replaces the image's entrypoint")
    user = re.search(r"^USER (\d+)", dockerfile, re.MULTILINE)
    expect(user and int(user.group(1)) == spec.get("securityContext", {}).get("runAsUser"),
           f"{where}: runAsUser is not the image's USER ({user.group(1) if user else 'none'})")
    # The same for the static image scripts/release.sh makes without a container engine.
    release = (ROOT / "scripts/release.sh").read_text()
    expect("--config.entrypoint /usr/local/bin/skiff " in release,
           "scripts/release.sh: its image's entrypoint is not /usr/local/bin/skiff")
    release_user = re.search(r"--config\.user (\d+):", release)
    expect(release_user and int(release_user.group(1)) == spec.get("securityContext", {}).get("runAsUser"),
           f"{where}: runAsUser is not the user of scripts/release.sh's image "
           f"({release_user.group(1) if release_user else 'none'})")
    data = flags(container.get("args", [])).get("--data")
    expect(data and re.search(rf"-o {release_user.group(1) if release_user else 'x'} .*/rootfs{re.escape(data)}\"", release),
           f"{where}: --data {data} is not the folder scripts/release.sh's image gives its user")


def check_redis(objects, where):
    redis = objects.get(("StatefulSet", "skiff-redis"))
    expect(redis is not None, f"{where}: no StatefulSet skiff-redis")
    if not redis:
        return
    expect(redis["spec"].get("replicas") == 1, f"{where}: the bundled Redis is one replica (no replication configured)")
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    given = flags(container.get("args", []))
    expect(given.get("--appendonly") == "yes", f"{where}: Redis runs without --appendonly yes")
    expect(given.get("--maxmemory-policy") == "noeviction", f"{where}: Redis may evict the hosts' state (no noeviction)")
    claims = {t["metadata"]["name"] for t in redis["spec"].get("volumeClaimTemplates", [])}
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    expect(mounts.get(given.get("--dir")) in claims, f"{where}: Redis's --dir {given.get('--dir')} is not on its PersistentVolumeClaim")
    env = env_of(container)
    expect(given.get("--requirepass") == "$(REDIS_PASSWORD)", f"{where}: Redis's --requirepass is not $(REDIS_PASSWORD)")
    refs = [env.get(n, {}).get("valueFrom", {}).get("secretKeyRef", {}) for n in ("REDIS_PASSWORD", "REDISCLI_AUTH")]
    expect(refs[0] and refs[0] == refs[1], f"{where}: redis-cli in the probes logs in with another password than Redis has")
    for probe in ("livenessProbe", "readinessProbe"):
        command = " ".join(container.get(probe, {}).get("exec", {}).get("command", []))
        expect("redis-cli ping" in command, f"{where}: Redis's {probe} is not `redis-cli ping`")


def check_cluster_example(example, server, redis, where):
    """example/ is server/ and redis/ and the three Secrets, made from the files its comment's
    commands make (scripts/check-kubernetes.sh runs them)."""
    secrets = {secret_name(name): obj for (kind, name), obj in example.items() if kind == "Secret"}
    others = {key for key in example if key[0] != "Secret"}
    expect(others == set(server) | set(redis),
           f"{where}: renders {sorted(others ^ (set(server) | set(redis)))} besides or instead of server/ and redis/")
    expect(set(secrets) == set(OPERATOR_SECRETS), f"{where}: makes the Secrets {sorted(secrets)}, not {sorted(OPERATOR_SECRETS)}")
    if set(secrets) != set(OPERATOR_SECRETS):
        return
    token = decoded(secrets["skiff-cluster"], "admin-token").strip()
    expect(len(token) >= 16, f"{where}: the admin token has {len(token)} characters; the server wants 16 or more")
    url_text = decoded(secrets["skiff-cluster"], "redis-url")
    expect(url_text == url_text.strip(), f"{where}: redis-url ends with white space (a newline from echo?): {url_text!r}")
    url = urllib.parse.urlsplit(url_text.strip())
    expect(url.scheme in ("redis", "rediss"), f"{where}: redis-url is not a redis:// or rediss:// URL: {url.scheme}")
    service = example.get(("Service", "skiff-redis"), {})
    statefulset = example.get(("StatefulSet", "skiff-redis"), {})
    replicas = statefulset.get("spec", {}).get("replicas", 1)
    names = [f"{statefulset.get('metadata', {}).get('name')}-{i}.skiff-redis" for i in range(replicas)] + ["skiff-redis"]
    host = url.hostname or ""
    expect(any(host == n or host.startswith(f"{n}.{NAMESPACE}.svc") for n in names),
           f"{where}: redis-url names {host}, not the bundled Redis ({names[0]})")
    ports = [p["port"] for p in service.get("spec", {}).get("ports", [])]
    expect(url.port in ports, f"{where}: redis-url's port {url.port} is not the Redis Service's {ports}")
    password = decoded(secrets["skiff-redis"], "password")
    expect(password and urllib.parse.unquote(url.password or "") == password,
           f"{where}: the password in redis-url is not the one Redis has (Secret skiff-redis, key password)")
    tls = secrets["skiff-api-tls"]
    expect(tls.get("type") == "kubernetes.io/tls", f"{where}: Secret skiff-api-tls is not of type kubernetes.io/tls")
    expect(decoded(tls, "tls.crt").startswith("-----BEGIN CERTIFICATE-----"), f"{where}: tls.crt is not a PEM certificate")
    expect("PRIVATE KEY-----" in decoded(tls, "tls.key"), f"{where}: tls.key is not a PEM private key")
    # The example's `images` entry must name the Deployment's image, or kustomize ignores it.
    images = yaml.safe_load((CLUSTER / "example/kustomization.yaml").read_text()).get("images", [])
    image = server.get(("Deployment", "skiff-server"), {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])[0].get("image", "")
    expect([i["name"] for i in images] == [image.rsplit(":", 1)[0]],
           f"{where}: its images entry names {[i['name'] for i in images]}, not the Deployment's image {image}")


def example_commands():
    """The commands example/kustomization.yaml tells its user to run (its lines `#   ...`)."""
    text = (CLUSTER / "example/kustomization.yaml").read_text()
    return [line[4:].rstrip(" \\").strip() for line in text.splitlines() if line.startswith("#   ")]


def check_cluster_docs(missing):
    docs = (ROOT / "docs/kubernetes.md").read_text()
    expect(missing == OPERATOR_SECRETS, f"the Secrets server/ and redis/ read are {missing}, not {OPERATOR_SECRETS}")
    for name, keys in OPERATOR_SECRETS.items():
        expect(f"`{name}`" in docs, f"docs/kubernetes.md: does not name the Secret `{name}`")
        for key in keys:
            expect(f"`{key}`" in docs,
                   f"docs/kubernetes.md: does not name key `{key}` of Secret {name}")
    for command in example_commands():
        expect(command in docs, f"docs/kubernetes.md: does not show the example's command `{command}`")
    for folder in sorted(p.parent.name for p in CLUSTER.glob("*/kustomization.yaml")):
        expect(f"`cluster/{folder}/`" in docs, f"docs/kubernetes.md: does not describe `cluster/{folder}/`")


def check_cluster(rendered):
    server = load(rendered, "cluster-server")
    redis = load(rendered, "cluster-redis")
    policies = load(rendered, "cluster-network-policy")
    example = load(rendered, "cluster-example")
    missing = {}
    for name, objects in (("cluster-server", server), ("cluster-redis", redis),
                          ("cluster-network-policy", policies), ("cluster-example", example)):
        check_namespace(objects, name)
        for what, obj in workloads(objects):
            check_pod(what, obj, name)
        for secret, keys in check_secret_refs(objects, name, complete=name == "cluster-example").items():
            missing.setdefault(secret, set()).update(keys)
        check_services(objects, name)
        check_scaling(objects, name)
        check_network_policies(objects, name, workloads(server) + workloads(redis))
    expect(any(k == "NetworkPolicy" for k, _ in policies), "cluster-network-policy: renders no NetworkPolicy")
    for name, objects in (("cluster-server", server), ("cluster-example", example)):
        check_server(objects, name)
    for name, objects in (("cluster-redis", redis), ("cluster-example", example)):
        check_redis(objects, name)
    check_cluster_example(example, server, redis, "cluster-example")
    check_cluster_docs(missing)


def check_pods(rendered):
    top = load(rendered, "kubernetes")
    runtime_class = load(rendered, "runtimeclass").get(("RuntimeClass", "skiff"))
    expect(runtime_class is not None, "runtimeclass: no RuntimeClass named skiff")
    if runtime_class:
        check_runtime_class(runtime_class)
        node_selector = runtime_class["scheduling"]["nodeSelector"]
        # What an operator applies is the RuntimeClass and the installer, nothing more or less
        # (the shared hosts, deploy/kubernetes/cluster, are a mode of their own).
        parts = {**load(rendered, "runtimeclass"), **load(rendered, "installer")}
        expect(set(top) == set(parts),
               f"kubernetes: renders {sorted(top)}, not the RuntimeClass and installer {sorted(parts)}")
        check_installer(top, "kubernetes", "install", node_selector)
        check_installer(load(rendered, "uninstall"), "uninstall", "uninstall", node_selector)
        examples = sorted(p.stem for p in rendered.glob("examples-*.yaml"))
        expect(len(examples) >= 2, f"only the examples {examples} were rendered")
        for name in examples:
            check_example(load(rendered, name), name, runtime_class)
    check_image_layout()
    check_docs()


def main():
    rendered = pathlib.Path(sys.argv[1])
    part = sys.argv[2] if len(sys.argv) > 2 else "all"
    if part not in ("pods", "cluster", "all"):
        sys.exit(f"kubernetes_objects: unknown part {part!r}: pods, cluster or nothing (both)")
    if part in ("pods", "all"):
        check_pods(rendered)
    if part in ("cluster", "all"):
        check_cluster(rendered)
    for problem in problems:
        print(f"kubernetes_objects: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

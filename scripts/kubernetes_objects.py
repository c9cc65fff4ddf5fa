"""Checks what the Kubernetes schemas cannot: that the objects deploy/kubernetes renders to fit
together (the installer runs on the nodes the RuntimeClass schedules onto, a Service reaches the
port the app listens on, ...), and agree with the installer image and the docs.

Usage: kubernetes_objects.py RENDERED_DIR, where RENDERED_DIR holds `kubectl kustomize` of each
kustomization as NAME.yaml (kubernetes.yaml for deploy/kubernetes itself, examples-hello.yaml for
deploy/kubernetes/examples/hello). Prints each problem; exits 1 if there is any. Needs PyYAML
(scripts/check-kubernetes.sh runs it in kubernetes-validate's venv, which has it).
"""

import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
INSTALLER = ROOT / "deploy/kubernetes/installer"

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


def main():
    rendered = pathlib.Path(sys.argv[1])
    top = load(rendered, "kubernetes")
    runtime_class = load(rendered, "runtimeclass").get(("RuntimeClass", "skiff"))
    expect(runtime_class is not None, "runtimeclass: no RuntimeClass named skiff")
    if runtime_class:
        check_runtime_class(runtime_class)
        node_selector = runtime_class["scheduling"]["nodeSelector"]
        # What an operator applies is the RuntimeClass and the installer, nothing more or less.
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
    for problem in problems:
        print(f"kubernetes_objects: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

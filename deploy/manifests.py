"""Renders the Helm chart, writes or checks deploy/kubernetes, and validates every object.

Run by `cargo xtask manifests` (and `cargo xtask test`) with the Python environment that
`cargo xtask setup` makes: helm-python-sdk (Helm's own Go SDK, so rendering is Helm's) and
kubernetes-validate (the Kubernetes OpenAPI schemas, offline).

    python deploy/manifests.py [--check]

Without --check it rewrites deploy/kubernetes from the chart; with it, it fails when the files
there differ from what the chart renders. Either way it lints the chart and validates, strictly
(unknown fields are errors), every object of the default rendering, of deploy/kubernetes and of
the chart's variants against the schemas of the oldest and newest Kubernetes versions supported.
"""

import argparse
import difflib
import sys
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "taskless-agent"
PLAIN = ROOT / "deploy" / "kubernetes"
RELEASE = "taskless-agent"
NAMESPACE = "taskless-agent"
# The chart's kubeVersion floor (appArmorProfile is GA from 1.30) and the newest schemas known.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]

# deploy/kubernetes: one file per template, numbered so `kubectl apply -f deploy/kubernetes/`
# creates the namespace first.
PLAIN_FILES = {
    "namespace.yaml": "00-namespace.yaml",
    "serviceaccount.yaml": "10-serviceaccount.yaml",
    "rbac.yaml": "20-rbac.yaml",
    "configmap.yaml": "30-configmap.yaml",
    "daemonset.yaml": "40-daemonset.yaml",
}
PLAIN_VALUES = {"namespace": {"create": True}, "plainManifests": True}
HEADER = (
    "# Generated from deploy/helm/taskless-agent by `cargo xtask manifests` (Helm's rendering\n"
    "# with namespace.create=true): edit the chart, then run it again.\n"
)

# Variants that must render valid objects too.
VARIANTS = {
    "privileged fallback": {"privileged": True},
    "kernels before 2025": {
        "capabilities": ["BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH"],
        "seccompProfile": {"type": "Unconfined"},
    },
    "nodes/proxy for kubelets before 1.33": {"rbac": {"nodesProxy": True}},
    "no service account or RBAC": {"serviceAccount": {"create": False}, "rbac": {"create": False}},
    "extra arguments and environment": {
        "extraArgs": ["--stats-interval", "10"],
        "env": [{"name": "TASKLESS_LOG", "value": "debug"}],
        "config": {"all": True, "packs": "/packs"},
        "priorityClassName": "system-node-critical",
    },
}


def render(values: dict) -> dict:
    """Template file name -> rendered text (empty renderings and NOTES.txt left out)."""
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    files = {}
    for path, text in out.items():
        name = Path(path).name
        if name.endswith(".yaml") and text.strip():
            files[name] = text.strip("\n") + "\n"
    return files


def objects(text: str, origin: str) -> list:
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    if not docs:
        raise SystemExit(f"{origin}: no objects")
    return docs


def api_rules(doc: dict, origin: str):
    """Rules the API server enforces beyond the schemas, for the settings the chart uses."""
    pod = doc.get("spec", {}).get("template", {}).get("spec", {})
    for container in pod.get("containers", []):
        sc = container.get("securityContext", {})
        added = sc.get("capabilities", {}).get("add", [])
        if sc.get("allowPrivilegeEscalation") is False and (
            sc.get("privileged") or "SYS_ADMIN" in added or "CAP_SYS_ADMIN" in added
        ):
            raise SystemExit(
                f"{origin}: allowPrivilegeEscalation false with privileged or CAP_SYS_ADMIN "
                "is refused by the API server"
            )
        if sc.get("privileged") and sc.get("capabilities"):
            raise SystemExit(f"{origin}: privileged with a capability list says two things")


def validate(docs: list, origin: str) -> int:
    """Validates each object against every version's strict schema; returns the count."""
    for doc in docs:
        api_rules(doc, origin)
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                raise SystemExit(
                    f"{origin}: {doc.get('kind')} {doc.get('metadata', {}).get('name')} "
                    f"is not valid for Kubernetes {version}: {e.message} at {list(e.path)}"
                )
    return len(docs)


def strictness_is_real():
    """A control: the validator must reject an unknown field, or passing proves nothing."""
    text = render({})["daemonset.yaml"]
    doc = objects(text, "control")[0]
    doc["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilitiesTypo"] = {}
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[0], strict=True)
    except kubernetes_validate.ValidationError:
        return
    raise SystemExit("control failed: strict validation accepted an unknown field")


def plain_expected() -> dict:
    rendered = render(PLAIN_VALUES)
    unknown = set(rendered) - set(PLAIN_FILES)
    if unknown:
        raise SystemExit(f"templates without a deploy/kubernetes file name: {sorted(unknown)}")
    return {PLAIN_FILES[name]: HEADER + text for name, text in rendered.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when deploy/kubernetes is stale")
    args = parser.parse_args()

    lint = helm.lint(str(CHART))
    if lint.get("errors") or any(m.get("severity", 0) > 2 for m in lint.get("messages", [])):
        raise SystemExit(f"helm lint: {lint}")

    expected = plain_expected()
    present = {p.name: p.read_text() for p in PLAIN.glob("*.yaml")}
    if args.check:
        stale = []
        for name in sorted(set(expected) | set(present)):
            want, have = expected.get(name), present.get(name)
            if want != have:
                diff = difflib.unified_diff(
                    (have or "").splitlines(keepends=True),
                    (want or "").splitlines(keepends=True),
                    f"deploy/kubernetes/{name}",
                    "rendered from the chart",
                )
                stale.append("".join(diff) or f"{name}: missing or extra\n")
        if stale:
            sys.stderr.write("".join(stale))
            raise SystemExit(
                "deploy/kubernetes differs from the chart's rendering: run `cargo xtask manifests`"
            )
    else:
        PLAIN.mkdir(parents=True, exist_ok=True)
        for name in set(present) - set(expected):
            (PLAIN / name).unlink()
        for name, text in expected.items():
            (PLAIN / name).write_text(text)

    strictness_is_real()
    count = 0
    for name, text in sorted(render({}).items()):
        count += validate(objects(text, f"chart {name}"), f"chart {name}")
    for name, text in sorted(expected.items()):
        count += validate(objects(text, f"deploy/kubernetes/{name}"), f"deploy/kubernetes/{name}")
    for variant, values in VARIANTS.items():
        for name, text in sorted(render(values).items()):
            count += validate(objects(text, f"{variant}: {name}"), f"{variant}: {name}")
    print(
        f"manifests: chart lints; deploy/kubernetes {'is current' if args.check else 'written'}; "
        f"{count} objects valid for Kubernetes {', '.join(KUBERNETES_VERSIONS)} (strict schemas)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

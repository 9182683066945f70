#!/usr/bin/env python3
"""What istioctl validate, istioctl analyze and mesh-admission each say about the case table.

Called by hack/istioctl-compare.sh, which builds istioctl. Each case file of --cases holds one object
and a header:

    # case: what is wrong (the table's first column)
    # expect: deny | warn | admit      (mesh-admission's answer; tests/istio_cases.rs checks it)
    # mesh: spire                      (optional: the SPIRE seed's trust domain democluster.internal,
                                        given to mesh-admission --config and istioctl --meshConfigFile)

istioctl analyze exits 0 with -o json even when it reports errors, so its JSON is read: the messages
whose origin is the case's object are listed by level and code. Prints a text table (or Markdown with
--markdown) and a summary; exits 1 when mesh-admission's answer differs from a case's header.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

SPIRE_TRUST_DOMAIN = "democluster.internal"
# Istio's MeshConfig (for istioctl analyze) and mesh-admission's configuration, for `# mesh: spire`.
SPIRE_MESH_CONFIG = f"trustDomain: {SPIRE_TRUST_DOMAIN}\n"
SPIRE_ADMISSION_CONFIG = f"mesh:\n  trustDomain: {SPIRE_TRUST_DOMAIN}\n"


@dataclass
class Case:
    path: Path
    title: str
    expect: str
    spire: bool
    kind: str
    namespace: str
    name: str


@dataclass
class Row:
    case: Case
    validate: str
    analyze: str
    analyze_messages: list[str]
    ours: str
    ours_detail: str


def read_case(path: Path) -> Case:
    text = path.read_text()
    header = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        key, _, value = line[1:].partition(":")
        header[key.strip()] = value.strip()
    obj = yaml.safe_load(text)
    meta = obj.get("metadata", {})
    return Case(
        path=path,
        title=header.get("case", path.stem),
        expect=header.get("expect", "?"),
        spire=header.get("mesh") == "spire",
        kind=obj.get("kind", ""),
        namespace=meta.get("namespace", "default"),
        name=meta.get("name", ""),
    )


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def istioctl_validate(istioctl: str, case: Case) -> str:
    result = run([istioctl, "validate", "-f", str(case.path)])
    if result.returncode == 0:
        return "accepted"
    # "Error: N errors occurred:" then one "* Kind/namespace/name: problem" line per problem.
    output = result.stderr + result.stdout
    problems = [line.strip()[2:].split(": ", 1)[-1] for line in output.splitlines() if line.strip().startswith("* ")]
    return "REFUSED: " + ("; ".join(problems) if problems else output.strip()[:150])


def istioctl_analyze(istioctl: str, case: Case, mesh_config: Path | None) -> tuple[str, list[str]]:
    """The levels and codes analyze reports on the case's object, and its messages."""
    args = [istioctl, "analyze", "-A", "--use-kube=false", "-o", "json", str(case.path)]
    if mesh_config is not None:
        args += ["--meshConfigFile", str(mesh_config)]
    result = run(args)
    if "could not be parsed" in result.stderr + result.stdout:
        # Exit 0 and an empty list: the object is skipped, with a log line on stderr.
        return "skipped the file (cannot parse it)", []
    start = result.stdout.find("[")
    try:
        messages = json.loads(result.stdout[start:]) if start >= 0 else []
    except json.JSONDecodeError:
        return f"unreadable output (exit {result.returncode})", [result.stdout[:200]]
    codes, texts = [], []
    for message in messages:
        origin = message.get("origin", "")
        if origin.endswith(f"{case.namespace}/{case.name}"):
            codes.append(f"{message.get('level', '?')} {message.get('code', '?')}")
            texts.append(f"{message.get('code', '?')}: {message.get('message', '')}")
    return (", ".join(codes) if codes else "nothing"), texts


def ours(binary: str, case: Case, config: Path | None) -> tuple[str, str]:
    args = [binary, "review", "-f", str(case.path), "--namespace", case.namespace]
    if config is not None:
        args += ["--config", str(config)]
    result = run(args)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning: ")]
    denials = [line for line in result.stderr.splitlines() if line.startswith("denied: ")]
    if result.returncode == 1 and denials:
        return "deny", denials[0].split(": ", 2)[-1]
    if result.returncode == 0 and warnings:
        return "warn", warnings[0].split(": ", 2)[-1]
    if result.returncode == 0:
        return "admit", ""
    return f"exit {result.returncode}", result.stderr.strip()[:150]


def table(rows: list[Row], markdown: bool) -> str:
    head = ["case", "istioctl validate", "istioctl analyze -A", "mesh-admission"]
    body = []
    for row in rows:
        verdict = {"deny": "denied", "warn": "warning", "admit": "admitted"}.get(row.ours, row.ours)
        mark = "" if row.ours == row.case.expect else f" (EXPECTED {row.case.expect})"
        validate = "refused" if row.validate.startswith("REFUSED") else "accepted"
        body.append([row.case.title, validate, row.analyze, verdict + mark])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in body])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--istioctl", required=True)
    parser.add_argument("--mesh-admission", required=True)
    parser.add_argument("--cases", required=True, type=Path)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    cases = [read_case(path) for path in sorted(args.cases.glob("*.yaml"))]
    version = run([args.istioctl, "version", "--remote=false"]).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory(prefix="istioctl-compare-") as tmp:
        mesh_config = Path(tmp, "meshconfig.yaml")
        mesh_config.write_text(SPIRE_MESH_CONFIG)
        admission_config = Path(tmp, "mesh-admission.yaml")
        admission_config.write_text(SPIRE_ADMISSION_CONFIG)
        for case in cases:
            verdict, detail = ours(args.mesh_admission, case, admission_config if case.spire else None)
            analyze, messages = istioctl_analyze(args.istioctl, case, None)
            if case.spire:
                # With the SPIRE trust domain in Istio's mesh config too: said only when it differs.
                with_mesh, more = istioctl_analyze(args.istioctl, case, mesh_config)
                if with_mesh != analyze:
                    analyze = f"{analyze} (with trustDomain: {with_mesh})"
                    messages += more
            rows.append(
                Row(
                    case=case,
                    validate=istioctl_validate(args.istioctl, case),
                    analyze=analyze,
                    analyze_messages=messages,
                    ours=verdict,
                    ours_detail=detail,
                )
            )

    print(f"istioctl {version}; {len(cases)} cases from {args.cases}\n")
    print(table(rows, args.markdown))
    wrong = [r for r in rows if r.case.expect != "admit"]
    print()
    print(f"wrong objects: {len(wrong)}")
    print(f"  istioctl validate refused: {sum(r.validate.startswith('REFUSED') for r in wrong)}")
    print(f"  istioctl analyze reported something on the object: {sum(r.analyze != 'nothing' for r in wrong)}")
    print("  (which of those are about the mistake itself: see the messages below)")
    print(
        f"  mesh-admission denied: {sum(r.ours == 'deny' for r in wrong)}, "
        f"warned: {sum(r.ours == 'warn' for r in wrong)}"
    )
    controls = [r for r in rows if r.case.expect == "admit"]
    print(
        f"controls (written as the seeds write them): {len(controls)}; "
        f"refused by istioctl validate: {sum(r.validate.startswith('REFUSED') for r in controls)}, "
        f"by mesh-admission: {sum(r.ours == 'deny' for r in controls)}"
    )
    print("\nWhat each tool said, per case:")
    for row in rows:
        print(f"- {row.case.path.name} ({row.case.title})")
        if row.validate.startswith("REFUSED"):
            print(f"    istioctl validate: {row.validate[len('REFUSED: ') :]}")
        for message in row.analyze_messages:
            print(f"    istioctl analyze:  {message}")
        if row.ours_detail:
            print(f"    mesh-admission:    {row.ours_detail}")
    mismatches = [r for r in rows if r.ours != r.case.expect]
    for row in mismatches:
        print(f"MISMATCH {row.case.path.name}: mesh-admission said {row.ours}, the case expects {row.case.expect}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())

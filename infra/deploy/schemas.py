"""Offline schema checks of the deployment files, so a broken manifest fails a test instead
of a ``kubectl apply``.

Core kinds go through ``kubernetes-validate`` (strict: unknown fields are errors) for a pinned
Kubernetes version; the custom resources (KubeRay ``RayService``, ``ServiceMonitor``) through
``jsonschema`` against the schemas in ``infra/schemas/crds/``, and a RayService's pod templates
as core ``PodTemplate``s and its ``serveConfigV2`` with Ray Serve's own schema. The compose
file is checked against the Compose Specification's schema in ``infra/schemas/compose/``.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
K8S_VERSION = "1.32.0"
CRDS = {("ray.io/v1", "RayService"): "rayservice.ray.io.v1.yaml",
        ("monitoring.coreos.com/v1", "ServiceMonitor"):
            "servicemonitor.monitoring.coreos.com.v1.yaml"}


class ManifestError(ValueError):
    """A document the schemas reject; the message names it and the first problem."""


@cache
def crd_schema(name: str) -> dict[str, Any]:
    """A vendored schema: a trimmed one, or a full CRD's ``v1`` ``openAPIV3Schema``."""
    schema = yaml.safe_load((SCHEMAS / "crds" / name).read_text())
    if schema.get("kind") == "CustomResourceDefinition":
        (v1,) = [v for v in schema["spec"]["versions"] if v["name"] == "v1"]
        schema = v1["schema"]["openAPIV3Schema"]
    return schema


def _where(doc: dict[str, Any]) -> str:
    name = (doc.get("metadata") or {}).get("name", "?")
    return f"{doc.get('kind', '?')} {name}"


def _jsonschema(doc: dict[str, Any], schema: dict[str, Any]) -> None:
    from jsonschema import Draft7Validator

    error = next(iter(sorted(Draft7Validator(schema).iter_errors(doc), key=str)), None)
    if error is not None:
        at = "/".join(str(p) for p in error.absolute_path) or "(top)"
        raise ManifestError(f"{_where(doc)}: {at}: {error.message}")


def _core(doc: dict[str, Any], where: str | None = None) -> None:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        at = "/".join(str(p) for p in exc.absolute_path) or "(top)"
        raise ManifestError(f"{where or _where(doc)}: {at}: {exc.message}") from exc
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise ManifestError(f"{_where(doc)}: no Kubernetes {K8S_VERSION} schema for "
                            f"{doc.get('apiVersion')} {doc.get('kind')}") from exc


def _ray_service(doc: dict[str, Any]) -> None:
    """The parts a trimmed CRD schema leaves open: pod templates and the Serve config."""
    from infra.deploy.serve_config import validate

    cluster = doc["spec"]["rayClusterConfig"]
    groups = [("headGroupSpec", cluster["headGroupSpec"])] + [
        (f"workerGroupSpecs/{g['groupName']}", g) for g in cluster.get("workerGroupSpecs", [])]
    for where, group in groups:
        _core({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "template"},
               "template": group["template"]}, f"{_where(doc)}: {where}")
    if "serveConfigV2" in doc["spec"]:
        try:
            validate(doc["spec"]["serveConfigV2"])
        except ValueError as exc:
            raise ManifestError(f"{_where(doc)}: serveConfigV2: {exc}") from exc


def validate_document(doc: dict[str, Any]) -> None:
    """Check one manifest; raises ``ManifestError`` naming what is wrong."""
    if not isinstance(doc, dict):
        raise ManifestError(f"not a manifest: {str(doc)[:60]!r}")
    crd = CRDS.get((doc.get("apiVersion"), doc.get("kind")))  # type: ignore[arg-type]
    if crd is None:
        _core(doc)
        return
    _jsonschema(doc, crd_schema(crd))
    if doc["kind"] == "RayService":
        _ray_service(doc)


def validate_file(path: Path) -> list[dict[str, Any]]:
    """Check every document of a YAML file; returns them."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for doc in docs:
        try:
            validate_document(doc)
        except ManifestError as exc:
            raise ManifestError(f"{path.name}: {exc}") from exc
    return docs


@cache
def compose_schema() -> dict[str, Any]:
    """The Compose Specification's JSON schema (vendored)."""
    return json.loads((SCHEMAS / "compose" / "compose-spec.json").read_text())


def validate_compose(text: str) -> dict[str, Any]:
    """Check a compose file against the Compose Specification; returns it parsed."""
    from jsonschema import Draft7Validator

    config = yaml.safe_load(text)
    errors = sorted(Draft7Validator(compose_schema()).iter_errors(config), key=str)
    if errors:
        at = "/".join(str(p) for p in errors[0].absolute_path) or "(top)"
        raise ManifestError(f"compose file: {at}: {errors[0].message}")
    return config

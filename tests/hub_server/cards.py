"""Card metadata: the Hub's rules for the fields GeoSANE-HF writes (``POST /api/validate-yaml`` and commits of a
README.md), and the ``cardData`` of repo info.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


def _card_data(readme: bytes) -> dict | None:
    text = readme.decode("utf-8", errors="replace")
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, flags=re.DOTALL)
    if match is None:
        return None
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


#: Licence ids the Hub accepts (https://huggingface.co/docs/hub/repositories-licenses).
HUB_LICENSES = frozenset(
    """apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m
    afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0
    cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0
    cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0
    cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl
    gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr
    mpl-2.0 odc-by odbl openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license
    llama2 llama3 llama3.1 llama3.2 llama3.3 llama4 gemma unknown other""".split()  # noqa: SIM905 (a readable table)
)
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")
_BASE_MODEL_RELATIONS = ("adapter", "merge", "quantized", "finetune")


def _is_repo_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_REPO_ID.match(value)) and "--" not in value and ".." not in value


def _str_list(data: dict, key: str, errors: list[str], check: Any = None) -> None:
    value = data.get(key)
    if value is None:
        return
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        errors.append(f'"{key}" must be a string or an array of strings, got {value!r}')
        return
    for item in items:
        if check is not None and not check(item):
            errors.append(f'"{key}" must name Hub repositories ("org/name"), got {item!r}')


def _model_index_errors(index: Any) -> list[str]:
    if not isinstance(index, list):
        return [f'"model-index" must be an array, got {type(index).__name__}']
    errors = []
    for i, entry in enumerate(index):
        where = f"model-index[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            errors.append(f'"{where}.name" is required and must be a string')
            continue
        results = entry.get("results")
        if not isinstance(results, list):
            errors.append(f'"{where}.results" must be an array')
            continue
        for j, result in enumerate(results):
            at = f"{where}.results[{j}]"
            task = result.get("task") if isinstance(result, dict) else None
            dataset = result.get("dataset") if isinstance(result, dict) else None
            metrics = result.get("metrics") if isinstance(result, dict) else None
            if not isinstance(task, dict) or not isinstance(task.get("type"), str):
                errors.append(f'"{at}.task.type" is required and must be a string')
            if not isinstance(dataset, dict) or not all(isinstance(dataset.get(k), str) for k in ("type", "name")):
                errors.append(f'"{at}.dataset.type" and "{at}.dataset.name" are required and must be strings')
            if not isinstance(metrics, list) or not metrics:
                errors.append(f'"{at}.metrics" must be a non-empty array')
                continue
            for k, metric in enumerate(metrics):
                ok = isinstance(metric, dict) and isinstance(metric.get("type"), str)
                value = metric.get("value") if isinstance(metric, dict) else None
                if not ok or isinstance(value, bool) or not isinstance(value, (int, float, str)):
                    errors.append(f'"{at}.metrics[{k}]" needs a string "type" and a number or string "value"')
    return errors


def card_errors(readme: str, repo_type: str = "model") -> list[str]:
    """What the Hub refuses in a README's metadata (empty: accepted); the rules cover the fields cards here write.

    YAML that does not parse or is not a mapping; ``license`` not a Hub licence id; ``license: other`` without
    ``license_name`` (lowercase id) and ``license_link``; ``tags``, ``datasets``, ``base_model`` not strings / lists
    of strings; ``base_model`` and ``datasets`` not Hub repo ids (a local path such as ``runs/small/model`` or
    ``/data/x``); ``base_model_relation`` not one of the Hub's; ``library_name`` / ``pipeline_tag`` / ``pretty_name``
    not strings; a ``model-index`` without task type, dataset type and name, metric type and value; dataset
    ``configs`` without ``config_name`` and ``data_files``.

    >>> card_errors("---\\nlicense: other\\n---\\n")
    ['"license_name" is required when "license" is "other"', '"license_link" is required when "license" is "other"']
    """
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", readme, flags=re.DOTALL)
    if match is None:
        return []
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError as err:
        return [f"Invalid YAML in README.md metadata: {err}"]
    if data is None:
        return []
    if not isinstance(data, dict):
        return [f"README.md metadata must be a mapping, got {type(data).__name__}"]
    errors: list[str] = []
    license = data.get("license")
    if license is not None:
        if not isinstance(license, str) or license not in HUB_LICENSES:
            errors.append(f'"license" must be one of the Hub\'s licence ids (or "other"), got {license!r}')
        if license == "other":
            name = data.get("license_name")
            if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", name):
                errors.append('"license_name" is required when "license" is "other"')
            if not isinstance(data.get("license_link"), str) or not data["license_link"]:
                errors.append('"license_link" is required when "license" is "other"')
    for key in ("library_name", "pipeline_tag", "pretty_name", "license_name", "license_link", "model_name"):
        if key in data and not isinstance(data[key], str):
            errors.append(f'"{key}" must be a string, got {data[key]!r}')
    _str_list(data, "tags", errors)
    _str_list(data, "base_model", errors, _is_repo_id)
    _str_list(data, "datasets", errors, _is_repo_id)
    relation = data.get("base_model_relation")
    if relation is not None and relation not in _BASE_MODEL_RELATIONS:
        errors.append(f'"base_model_relation" must be one of {list(_BASE_MODEL_RELATIONS)}, got {relation!r}')
    if relation is not None and "base_model" not in data:
        errors.append('"base_model_relation" needs a "base_model"')
    if "model-index" in data:
        if repo_type != "model":
            errors.append('"model-index" is only valid in model cards')
        errors += _model_index_errors(data["model-index"])
    configs = data.get("configs")
    valid = isinstance(configs, list) and all(
        isinstance(c, dict) and isinstance(c.get("config_name"), str) and "data_files" in c for c in configs
    )
    if configs is not None and not valid:
        errors.append('"configs" must be an array of {config_name, data_files}')
    return errors

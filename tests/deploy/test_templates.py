"""The deployment templates users copy, checked without AWS: the SAM template by cfn-lint (a
subprocess) and its sample function run instrumented in the local Lambda; the Terraform module
parsed by python-hcl2 and its references checked. No terraform binary installs from the package
registries here, and `terraform validate` would need the AWS provider besides, so neither runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import hcl2
from cfnlint.decode import decode
from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

from collector.core.pdata import get_attr, iter_spans
from collector.core.signals import Signal
from emulator import LambdaEmulator, Status
from tests.support.backend import Backend

ROOT = Path(__file__).resolve().parents[2]
SAM = ROOT / "deploy" / "lambda" / "sam"
TEMPLATE = SAM / "template.yaml"
TERRAFORM = ROOT / "deploy" / "lambda" / "terraform"
WRAPPER = ROOT / "instrumentation" / "bin" / "coldtail-instrument"
EVENTS = ROOT / "tests" / "instrumentation" / "events"
VENV_BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "deploy" / "lambda"))
import build_layer  # noqa: E402

HCL = hcl2.SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True
)


def layer_zip(runtime: str, arch: str) -> Path:
    return ROOT / "dist" / f"{build_layer.Target(runtime, arch).name}.zip"


def schema_enum(resource: str, prop: str) -> set[str]:
    """The values CloudFormation's schema of `resource` allows for `prop` (a list's items)."""
    schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", resource).schema
    prop = schema["properties"][prop]
    return set(prop.get("items", prop)["enum"])


# SAM


def cfn_lint(template: Path) -> tuple[int, list[dict]]:
    """cfn-lint's exit code (0: no finding) and findings."""
    result = subprocess.run(
        [str(VENV_BIN / "cfn-lint"), "--format", "json", str(template)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def sam_template() -> dict:
    template, problems = decode(str(TEMPLATE))
    assert not problems, problems
    return template


def resolve(value, parameters: dict, **given: str):
    """`value` with every {"Ref": parameter} replaced by `given` or the parameter's Default."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return given.get(value["Ref"], parameters[value["Ref"]].get("Default"))
    if isinstance(value, dict):
        return {k: resolve(v, parameters, **given) for k, v in value.items()}
    return value


def test_cfn_lint_finds_nothing_in_the_sam_template():
    returncode, findings = cfn_lint(TEMPLATE)
    assert findings == []
    assert returncode == 0


def test_cfn_lint_reads_the_sam_resources(tmp_path):
    # The control for the test above: a misspelt property of the SAM function is an error.
    broken = tmp_path / "template.yaml"
    broken.write_text(TEMPLATE.read_text().replace("MemorySize:", "MemorySise:"))
    returncode, findings = cfn_lint(broken)
    assert returncode & 2  # errors
    assert any(f["Rule"]["Id"] == "E3002" and "MemorySise" in f["Message"] for f in findings)


def test_sam_runtime_and_architecture_are_those_of_the_layer_builds():
    parameters = sam_template()["Parameters"]
    runtimes = parameters["Runtime"]["AllowedValues"]
    archs = parameters["Architecture"]["AllowedValues"]
    assert set(runtimes) == set(build_layer.RUNTIMES)
    assert set(archs) == set(build_layer.ARCHS)
    assert set(runtimes) <= schema_enum("AWS::Lambda::Function", "Runtime")
    assert set(archs) <= schema_enum("AWS::Lambda::Function", "Architectures")
    assert parameters["Runtime"]["Default"] in runtimes
    assert parameters["Architecture"]["Default"] in archs


def test_sam_layer_is_the_built_zip_for_the_default_runtime_and_architecture():
    template = sam_template()
    parameters = template["Parameters"]
    layer = template["Resources"]["ColdtailLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    props = layer["Properties"]
    # SAM packages a local file from a literal path only, so the default pair names the zip.
    default_zip = layer_zip(parameters["Runtime"]["Default"], parameters["Architecture"]["Default"])
    assert (SAM / props["ContentUri"]).resolve() == default_zip
    assert props["CompatibleRuntimes"] == [{"Ref": "Runtime"}]
    assert props["CompatibleArchitectures"] == [{"Ref": "Architecture"}]


def test_sam_function_runs_on_the_layer_through_the_exec_wrapper():
    template = sam_template()
    function = template["Resources"]["SampleFunction"]
    assert function["Type"] == "AWS::Serverless::Function"
    props = function["Properties"]
    assert props["Layers"] == [{"Ref": "ColdtailLayer"}]
    assert props["Runtime"] == {"Ref": "Runtime"}
    assert props["Architectures"] == [{"Ref": "Architecture"}]
    assert 1 <= props["Timeout"] <= 900  # Lambda's bounds
    assert 128 <= props["MemorySize"] <= 10240
    env = props["Environment"]["Variables"]
    assert env["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/coldtail-instrument"
    assert env["COLDTAIL_BACKEND_ENDPOINT"] == {"Ref": "BackendEndpoint"}
    assert env["OTEL_SERVICE_NAME"] == {"Ref": "ServiceName"}
    (event,) = props["Events"].values()
    assert event["Type"] == "HttpApi"
    outputs = template["Outputs"]
    assert outputs["LayerArn"]["Value"] == {"Ref": "ColdtailLayer"}
    assert "${ServerlessHttpApi}" in outputs["ApiUrl"]["Value"]["Fn::Sub"]


def test_sam_backend_endpoint_must_be_given_as_a_url():
    endpoint = sam_template()["Parameters"]["BackendEndpoint"]
    assert "Default" not in endpoint  # nothing sensible to default to
    pattern = re.compile(endpoint["AllowedPattern"])
    assert pattern.fullmatch("https://otel-gateway.example.com:4318")
    assert pattern.fullmatch("http://10.0.0.5:4318")
    assert not pattern.fullmatch("otel-gateway.example.com:4317")


async def test_the_sample_function_as_configured_exports_its_http_api_span():
    template = sam_template()
    props = template["Resources"]["SampleFunction"]["Properties"]
    (route,) = [e["Properties"] for e in props["Events"].values()]
    env = resolve(
        props["Environment"]["Variables"],
        template["Parameters"],
        BackendEndpoint="http://127.0.0.1:9",
    )
    # /opt/coldtail-instrument in the layer is this script.
    assert env.pop("AWS_LAMBDA_EXEC_WRAPPER") == "/opt/coldtail-instrument"
    event = json.loads((EVENTS / "apigw-http.json").read_text())
    route_key = f"{route['Method']} {route['Path']}"
    event.update(
        routeKey=route_key,
        rawPath=route["Path"],
        rawQueryString="name=ada",
        queryStringParameters={"name": "ada"},
        pathParameters={},
        body=None,
    )
    event["requestContext"].update(routeKey=route_key)
    event["requestContext"]["http"].update(method=route["Method"], path=route["Path"])

    async with Backend() as backend:
        # In Lambda the layer's extension receives the spans on its default endpoint; here the
        # instrumentation exports straight to the backend.
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = backend.http_endpoint
        async with LambdaEmulator(
            props["Handler"],
            SAM / props["CodeUri"],
            env=env,
            timeout=props["Timeout"],
            memory_mb=props["MemorySize"],
            exec_wrapper=WRAPPER,
            layers=[ROOT],
        ) as fn:
            result = await fn.invoke(event)
        await backend.wait_for(Signal.TRACES, 1)

    assert result.status == Status.SUCCESS, result.error
    assert result.payload["statusCode"] == 200
    assert json.loads(result.payload["body"]) == {"hello": "ada"}
    # The invocation's span; a cold start's init and import spans come along.
    ((resource_spans, span),) = [
        (resource_spans, span)
        for request in backend.accepted(Signal.TRACES)
        for resource_spans, _, span in iter_spans(request)
        if get_attr(span.attributes, "faas.trigger") == "http"
    ]
    assert get_attr(resource_spans.resource.attributes, "service.name") == env["OTEL_SERVICE_NAME"]
    assert get_attr(span.attributes, "http.route") == route["Path"]
    assert get_attr(span.attributes, "http.response.status_code") == 200


# Terraform


def terraform_module() -> dict[str, list]:
    """Every top-level block of the module's .tf files, by block type."""
    blocks: dict[str, list] = {}
    for path in sorted(TERRAFORM.glob("*.tf")):
        for kind, found in hcl2.loads(path.read_text(), serialization_options=HCL).items():
            blocks.setdefault(kind, []).extend(found)
    return blocks


def labelled(blocks: list[dict]) -> dict:
    """{label: body} of blocks with one label (variable, output)."""
    return {name: body for block in blocks for name, body in block.items()}


def resources(module: dict, kind: str = "resource") -> dict[tuple[str, str], dict]:
    """{(type, name): body} of the module's resources (or data sources)."""
    return {
        (type_, name): body
        for block in module.get(kind, [])
        for type_, named in block.items()
        for name, body in named.items()
    }


def only(module: dict, type_: str) -> tuple[str, dict]:
    (found,) = [(name, body) for (t, name), body in resources(module).items() if t == type_]
    return found


def allowed_values(variable: dict, name: str) -> set[str]:
    """The values of a `contains([...], var.<name>)` validation."""
    (validation,) = variable["validation"]
    listed = re.fullmatch(rf"\$\{{contains\(\[(.*)\], var\.{name}\)\}}", validation["condition"])
    assert listed, validation["condition"]
    return set(re.findall(r'"([^"]*)"', listed[1]))


def test_terraform_files_are_the_module():
    assert sorted(p.name for p in TERRAFORM.glob("*.tf")) == [
        "main.tf",
        "outputs.tf",
        "variables.tf",
        "versions.tf",
    ]
    (terraform,) = terraform_module()["terraform"]
    (providers,) = terraform["required_providers"]
    assert providers["aws"]["source"] == "hashicorp/aws"


def test_terraform_function_runs_on_the_layer_through_the_exec_wrapper():
    module = terraform_module()
    layer_name, layer = only(module, "aws_lambda_layer_version")
    _, function = only(module, "aws_lambda_function")
    assert function["layers"] == [f"${{aws_lambda_layer_version.{layer_name}.arn}}"]
    assert function["runtime"] == "${var.runtime}"
    assert function["architectures"] == ["${var.architecture}"]
    assert layer["compatible_runtimes"] == ["${var.runtime}"]
    assert layer["compatible_architectures"] == ["${var.architecture}"]
    (environment,) = function["environment"]
    env = environment["variables"]
    assert env["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/coldtail-instrument"
    assert env["COLDTAIL_BACKEND_ENDPOINT"] == "${var.backend_endpoint}"
    assert env["OTEL_SERVICE_NAME"]
    # The hash makes a rebuilt zip a new layer version / function code.
    for resource in (layer, function):
        path = resource["filename"].removeprefix("${").removesuffix("}")
        assert resource["source_code_hash"] == f"${{filebase64sha256({path})}}"


def test_terraform_role_allows_lambda_and_logging():
    module = terraform_module()
    role_name, role = only(module, "aws_iam_role")
    _, attachment = only(module, "aws_iam_role_policy_attachment")
    _, function = only(module, "aws_lambda_function")
    assert function["role"] == f"${{aws_iam_role.{role_name}.arn}}"
    assert attachment["role"] == f"${{aws_iam_role.{role_name}.name}}"
    assert attachment["policy_arn"].endswith(
        ":iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    )
    assert "lambda.amazonaws.com" in role["assume_role_policy"]
    assert "sts:AssumeRole" in role["assume_role_policy"]


def test_terraform_runtime_and_architecture_are_validated_against_the_layer_builds():
    variables = labelled(terraform_module()["variable"])
    runtimes = allowed_values(variables["runtime"], "runtime")
    archs = allowed_values(variables["architecture"], "architecture")
    assert runtimes == set(build_layer.RUNTIMES)
    assert archs == set(build_layer.ARCHS)
    assert variables["runtime"]["default"] in runtimes
    assert variables["architecture"]["default"] in archs


def test_terraform_layer_zip_defaults_to_the_build_for_the_runtime_and_architecture():
    (locals_,) = terraform_module()["locals"]
    default = "${path.module}/../../../dist/coldtail-layer-${var.runtime}-${var.architecture}.zip"
    assert locals_["layer_zip"] == f'${{coalesce(var.layer_zip, "{default}")}}'
    # What that path names, for a pair of values.
    path = default.replace("${path.module}", str(TERRAFORM))
    path = path.replace("${var.runtime}", "python3.13").replace("${var.architecture}", "arm64")
    assert Path(path).resolve() == layer_zip("python3.13", "arm64")


def test_terraform_variables_are_all_declared_and_all_used():
    module = terraform_module()
    declared = set(labelled(module["variable"]))
    # Everything but the declarations (whose validations name their own variable).
    text = json.dumps({kind: blocks for kind, blocks in module.items() if kind != "variable"})
    assert set(re.findall(r"\bvar\.(\w+)", text)) == declared
    # Every other reference resolves too: locals, resources and data sources.
    (locals_,) = module["locals"]
    assert set(re.findall(r"\blocal\.(\w+)", text)) <= set(locals_)
    data = set(resources(module, "data"))
    assert set(re.findall(r"\bdata\.(aws_\w+)\.(\w+)", text)) <= data
    defined = set(resources(module))
    referenced = set(re.findall(r"(?<![.\w])(aws_\w+)\.(\w+)\.", text))
    assert referenced <= defined, referenced - defined

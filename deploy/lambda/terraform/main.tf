# The coldtail layer, a Python function instrumented by it (AWS_LAMBDA_EXEC_WRAPPER), and an
# HTTP API in front of the function.

locals {
  layer_zip    = coalesce(var.layer_zip, "${path.module}/../../../dist/coldtail-layer-${var.runtime}-${var.architecture}.zip")
  service_name = coalesce(var.service_name, var.function_name)
}

data "aws_partition" "current" {}

resource "aws_lambda_layer_version" "coldtail" {
  layer_name               = "coldtail"
  description              = "coldtail instrumentation and collector extension"
  filename                 = local.layer_zip
  source_code_hash         = filebase64sha256(local.layer_zip)
  compatible_runtimes      = [var.runtime]
  compatible_architectures = [var.architecture]
}

resource "aws_iam_role" "function" {
  name = "${var.function_name}-role"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "lambda.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

# CloudWatch Logs for the function and the extension; the telemetry itself goes to the backend.
resource "aws_iam_role_policy_attachment" "basic_execution" {
  role       = aws_iam_role.function.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
}

resource "aws_lambda_function" "function" {
  function_name    = var.function_name
  role             = aws_iam_role.function.arn
  filename         = var.function_zip
  source_code_hash = filebase64sha256(var.function_zip)
  handler          = var.handler
  runtime          = var.runtime
  architectures    = [var.architecture]
  memory_size      = var.memory_size
  timeout          = var.timeout
  layers           = [aws_lambda_layer_version.coldtail.arn]

  environment {
    variables = {
      AWS_LAMBDA_EXEC_WRAPPER   = "/opt/coldtail-instrument"
      COLDTAIL_BACKEND_ENDPOINT = var.backend_endpoint
      OTEL_SERVICE_NAME         = local.service_name
    }
  }

  # The role must be able to write logs before the first invocation.
  depends_on = [aws_iam_role_policy_attachment.basic_execution]
}

# Quick create: one $default route to the function on an auto-deployed $default stage.
resource "aws_apigatewayv2_api" "http" {
  name          = var.function_name
  protocol_type = "HTTP"
  target        = aws_lambda_function.function.arn
}

resource "aws_lambda_permission" "http_api" {
  statement_id  = "AllowHttpApiInvoke"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.function.function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.http.execution_arn}/*/*"
}

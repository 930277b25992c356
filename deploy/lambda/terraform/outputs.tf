output "layer_arn" {
  description = "ARN of the published layer version, for other functions to attach."
  value       = aws_lambda_layer_version.coldtail.arn
}

output "function_arn" {
  description = "ARN of the instrumented function."
  value       = aws_lambda_function.function.arn
}

output "api_url" {
  description = "URL of the HTTP API; every path reaches the function."
  value       = aws_apigatewayv2_api.http.api_endpoint
}

variable "runtime" {
  description = "Python runtime of the layer zip and of the function."
  type        = string
  default     = "python3.13"

  validation {
    condition     = contains(["python3.12", "python3.13", "python3.14"], var.runtime)
    error_message = "The runtime must be python3.12, python3.13 or python3.14."
  }
}

variable "architecture" {
  description = "Instruction set of the layer zip and of the function."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "The architecture must be x86_64 or arm64."
  }
}

variable "backend_endpoint" {
  description = "OTLP/HTTP base URL of the backend, e.g. https://otel-gateway.example.com:4318."
  type        = string

  validation {
    condition     = can(regex("^https?://\\S+$", var.backend_endpoint))
    error_message = "The backend endpoint must be an http:// or https:// URL."
  }
}

variable "function_name" {
  description = "Name of the Lambda function; also its service.name unless service_name is set."
  type        = string
  default     = "coldtail-sample"
}

variable "service_name" {
  description = "service.name of the function's telemetry (default: the function name)."
  type        = string
  default     = null
}

variable "function_zip" {
  description = "Path of the function's deployment package (a zip of its code)."
  type        = string
}

variable "handler" {
  description = "The function's handler, module.function inside function_zip."
  type        = string
  default     = "app.handler"
}

variable "layer_zip" {
  description = "Path of the layer zip (default: dist/coldtail-layer-<runtime>-<architecture>.zip of this repository)."
  type        = string
  default     = null
}

variable "memory_size" {
  description = "Memory of the function in MB, shared with the coldtail extension."
  type        = number
  default     = 512
}

variable "timeout" {
  description = "Timeout of the function in seconds; an environment's first invocation also waits for the collector to load."
  type        = number
  default     = 10
}

terraform {
  required_version = ">= 1.3"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 6.20 accepts the python3.14 runtime, which older releases may refuse.
      version = ">= 6.20"
    }
  }
}

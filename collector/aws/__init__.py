"""What the AWS components share: botocore sessions with the standard credential chain and an
assumed role."""

# A small AWS stack for the reporting service (a cookbook example with seeded mistakes).

provider "aws" {
  region = "eu-central-1"
}

resource "aws_security_group" "reporting" {
  name        = "reporting"
  description = "reporting service"

  ingress {
    description = "HTTPS from anywhere"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  ingress {
    description = "SSH for the on-call engineer"
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_s3_bucket" "exports" {
  bucket = "reporting-exports-prod"
}

resource "aws_s3_bucket_acl" "exports" {
  bucket = aws_s3_bucket.exports.id
  acl    = "public-read"
}

resource "aws_db_instance" "reports" {
  identifier          = "reports"
  engine              = "postgres"
  instance_class      = "db.t3.micro"
  allocated_storage   = 20
  username            = "reporting"
  password            = "Winter2026!reports"
  storage_encrypted   = false
  publicly_accessible = false
}

variable "db_password" {
  type      = string
  sensitive = true
}

resource "aws_security_group" "web" {
  name = "web"

  ingress {
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  ingress {
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = ["10.0.0.0/8"]
  }
}

resource "aws_db_instance" "app" {
  engine              = "postgres"
  instance_class      = "db.t3.medium"
  username            = "app"
  password            = var.db_password
  storage_encrypted   = true
  publicly_accessible = false
}

resource "aws_kms_key" "app" {
  description         = "app key"
  enable_key_rotation = true
}

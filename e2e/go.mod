module github.com/cloister-dev/cloister/e2e

go 1.26.0

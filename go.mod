module github.com/aoai-failover/gateway

go 1.26

module labctl/workloads/riskd

go 1.22

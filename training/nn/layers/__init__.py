"""GNN layers on the shared message-passing core, one file each."""

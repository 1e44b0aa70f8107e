"""End-to-end tests: scenarios in throwaway VMs (see README.md)."""

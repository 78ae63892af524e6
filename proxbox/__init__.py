"""proxbox: keeps NetBox true to Proxmox VE and streams every sync live."""

__version__ = "0.1.0"

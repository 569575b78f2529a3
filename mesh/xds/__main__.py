"""`python -m mesh.xds`: the control plane (see mesh.xds._controlplane)."""

from mesh.xds._controlplane import main

if __name__ == "__main__":
    raise SystemExit(main())

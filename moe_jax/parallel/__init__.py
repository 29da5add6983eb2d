"""Device meshes and expert parallelism."""

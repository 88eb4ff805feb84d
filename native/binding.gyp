{
  "targets": [
    {
      "target_name": "nbdh_netdev",
      "sources": ["nbdh_netdev.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}

{
  "targets": [
    {
      "target_name": "nbdh_netdev",
      "sources": ["nbdh_netdev.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    },
    {
      "target_name": "nbdh_udp",
      "sources": ["nbdh_udp.c"],
      "cflags": ["-Wall", "-Wextra", "-O2", "-pthread"],
      "ldflags": ["-pthread"]
    },
    {
      "target_name": "nbdh_file",
      "sources": ["nbdh_file.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    },
    {
      "target_name": "nbdh_intake",
      "sources": ["nbdh_intake.c"],
      "cflags": ["-Wall", "-Wextra", "-O2", "-pthread"],
      "ldflags": ["-pthread"]
    }
  ]
}

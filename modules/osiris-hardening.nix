# Sandboxing of osiris-agent.service, as systemd serviceConfig values.
#
# PURE DATA on purpose: no function, no nixpkgs, no lib. modules/osiris.nix
# merges it into serviceConfig, and tools/check-nix.sh evaluates it with a
# bare `nix-instantiate --eval --strict --json`, renders a unit file and
# scores it with `systemd-analyze security --offline=true`, so the sandbox is
# checked on machines that have no nixpkgs. Lists become one directive line
# per element, booleans "true"/"false", as in the NixOS unit generator.
#
# The agent is an unprivileged network client (WinRM to Windows hosts, gRPC
# from endpoint agents, a local HTTP API) that writes only under its state
# directory and reads secrets from $CREDENTIALS_DIRECTORY.
{
  # No capabilities at all: the agent never needs root powers. This also
  # means the kernel refuses any clock change (no CAP_SYS_TIME), see below.
  CapabilityBoundingSet = "";
  AmbientCapabilities = "";
  NoNewPrivileges = true;

  # Filesystem: everything read-only except StateDirectory= (and any
  # ReadWritePaths= the module adds); no /home, private /tmp, no devices.
  ProtectSystem = "strict";
  ProtectHome = true;
  PrivateTmp = true;
  PrivateDevices = true;
  PrivateMounts = true;
  DevicePolicy = "closed";
  UMask = "0077";
  RemoveIPC = true;

  # User namespace mapping only root and osiris: files of other users look
  # like nobody's. Safe because the agent only touches its own state, its
  # credentials and world-readable /etc/osiris. Anything that must act as
  # root (e.g. writing an A/B slot) belongs in a separate, smaller unit.
  PrivateUsers = true;

  # /proc: other processes invisible, and only per-process entries. NOTE:
  # ProcSubset=pid hides /proc/meminfo, /proc/loadavg, /proc/uptime; a
  # plugin that needs them should use statvfs/sysinfo-style calls instead.
  ProtectProc = "invisible";
  ProcSubset = "pid";

  ProtectKernelTunables = true;
  ProtectKernelModules = true;
  ProtectKernelLogs = true;
  ProtectControlGroups = true;
  ProtectHostname = true;

  # ProtectClock=true would install a seccomp filter that blocks adjtimex()
  # and clock_adjtime() ALTOGETHER, including the read-only modes=0 call the
  # agent uses to see whether the clock is NTP-synchronised (systemd.exec(5):
  # "the filter does not take into account that some of the calls can be
  # used to read the clock state"). Clock writes are still impossible: the
  # capability bounding set is empty (no CAP_SYS_TIME) and PrivateDevices
  # hides /dev/rtc*.
  ProtectClock = false;

  RestrictNamespaces = true;
  LockPersonality = true;
  # CPython without a JIT never needs writable+executable pages.
  MemoryDenyWriteExecute = true;
  RestrictRealtime = true;
  RestrictSUIDSGID = true;

  # AF_NETLINK: getaddrinfo(AI_ADDRCONFIG) and interface enumeration use it.
  # No IPAddressDeny=: the agent must reach whatever hosts the site lists.
  RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" ];

  # Allow-list, then subtract; entries apply in order, so the trailing
  # "adjtimex" re-allows the one @clock call (via ~@privileged) we read
  # with. EPERM instead of SIGSYS: a denied call becomes a Python OSError
  # the agent reports, not a dead process.
  SystemCallArchitectures = "native";
  SystemCallFilter = [ "@system-service" "~@privileged" "~@resources" "adjtimex" ];
  SystemCallErrorNumber = "EPERM";
}

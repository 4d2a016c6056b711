//! What a unit's exit status says when systemd, not the program, gave it: statuses 200 to 245
//! are systemd failing to set up the process (its sandbox, user, credentials) before `drover`
//! ever ran. Each is named, explained, and paired with what an operator can do about it.

/// One set-up step systemd failed, from the exit status it reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetupFailure {
    pub status: i32,
    /// systemd's own name for it (`NAMESPACE` for 226), as `systemctl status` prints it.
    pub name: &'static str,
    /// What could not be set up.
    pub what: &'static str,
    /// The sandboxing directives whose absence would let it start (`systemd.relax_sandbox`).
    pub relax: &'static [&'static str],
    /// Otherwise, what to change.
    pub hint: &'static str,
}

/// The mount-namespace directives: the usual cause of 226 in containers and under user managers.
const MOUNTS: &[&str] = &[
    "PrivateTmp",
    "PrivateDevices",
    "ProtectSystem",
    "ProtectHome",
    "ProtectKernelTunables",
    "ProtectKernelLogs",
    "ProtectControlGroups",
];

const SECCOMP: &[&str] = &[
    "SystemCallFilter",
    "SystemCallArchitectures",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "RestrictRealtime",
    "RestrictNamespaces",
    "RestrictSUIDSGID",
];

const TABLE: &[SetupFailure] = &[
    f(200, "CHDIR", "the working directory", &[], "check WorkingDirectory= and that the unit's user may enter it"),
    f(203, "EXEC", "the program", &[], "check that the drover binary named in ExecStart= exists and is executable (re-run `drover install-units` after moving it)"),
    f(204, "MEMORY", "memory for the process", &[], "the host is out of memory"),
    f(209, "STDOUT", "standard output", &[], "check StandardOutput="),
    f(216, "GROUP", "the unit's group", &[], "create the group (the package creates `drover`) or set `systemd.user` to an existing user"),
    f(217, "USER", "the unit's user", &[], "create the user (the package creates `drover`; `useradd --system drover`) or set `systemd.user` to an existing one"),
    f(218, "CAPABILITIES", "the capability bounding set", &["CapabilityBoundingSet"], ""),
    f(219, "CGROUP", "the unit's control group", &[], "the manager cannot create cgroups here (no delegation)"),
    f(226, "NAMESPACE", "the sandbox's mount namespace", MOUNTS, ""),
    f(227, "NO_NEW_PRIVILEGES", "no-new-privileges", &["NoNewPrivileges"], ""),
    f(228, "SECCOMP", "the system call filter", SECCOMP, ""),
    f(230, "PERSONALITY", "the execution domain", &["LockPersonality"], ""),
    f(232, "ADDRESS_FAMILIES", "the socket address families filter", &["RestrictAddressFamilies"], ""),
    f(233, "RUNTIME_DIRECTORY", "the runtime directory", &[], "check RuntimeDirectory= and that /run is writable by the manager"),
    f(238, "STATE_DIRECTORY", "the state directory", &[], "check StateDirectory= and the ownership of /var/lib/drover"),
    f(243, "CREDENTIALS", "the unit's credentials", &[], "check that the files named in `broker.password_file` / LoadCredential= exist and are readable by root"),
    f(245, "BPF", "the device or IP filter (BPF)", &["PrivateDevices"], "a class's `devices` need the cgroup device controller"),
];

const fn f(
    status: i32,
    name: &'static str,
    what: &'static str,
    relax: &'static [&'static str],
    hint: &'static str,
) -> SetupFailure {
    SetupFailure { status, name, what, relax, hint }
}

/// The set-up failure an exit status stands for, when it is one of systemd's own.
pub fn setup_failure(status: i32) -> Option<&'static SetupFailure> {
    TABLE.iter().find(|f| f.status == status)
}

/// A unit's exit status, in words: `exit status 1`, or for systemd's own statuses what it
/// could not do and what to set, e.g. `exit status 226 (NAMESPACE): systemd could not set up
/// the sandbox's mount namespace; set systemd.relax_sandbox = ["PrivateTmp", ...]`. Directives
/// already relaxed are left out of the suggestion.
pub fn describe(status: i32, relaxed: &[String]) -> String {
    if !(200..=255).contains(&status) {
        return format!("exit status {status}");
    }
    let Some(f) = setup_failure(status) else {
        return format!("exit status {status}: systemd could not set up the process (see `systemctl status`)");
    };
    let mut text = format!("exit status {status} ({}): systemd could not set up {}", f.name, f.what);
    let left: Vec<String> =
        f.relax.iter().filter(|d| !relaxed.iter().any(|r| r == *d)).map(|d| format!("\"{d}\"")).collect();
    if !left.is_empty() {
        let mut all: Vec<String> = relaxed.iter().map(|d| format!("\"{d}\"")).collect();
        all.extend(left);
        text.push_str(&format!(
            "; this host cannot apply part of the unit's sandbox: set `systemd.relax_sandbox = [{}]` (or fewer of them) and run `drover install-units` again",
            all.join(", ")
        ));
    }
    if !f.hint.is_empty() {
        text.push_str(&format!("; {}", f.hint));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemds_own_statuses_are_decoded_with_what_to_do() {
        // (status, relaxed already, wanted in the text, not wanted)
        let cases: &[(i32, &[&str], &str, &str)] = &[
            (1, &[], "exit status 1", "systemd"),
            (78, &[], "exit status 78", "systemd"),
            (
                226,
                &[],
                "exit status 226 (NAMESPACE): systemd could not set up the sandbox's mount namespace; this host cannot apply part of the unit's sandbox: set `systemd.relax_sandbox = [\"PrivateTmp\"",
                "@",
            ),
            (226, &["PrivateTmp"], "relax_sandbox = [\"PrivateTmp\", \"PrivateDevices\"", "\"PrivateTmp\", \"PrivateTmp\""),
            (228, &[], "(SECCOMP)", "PrivateTmp"),
            (217, &[], "useradd --system drover", "relax_sandbox"),
            (203, &[], "(EXEC)", "relax_sandbox"),
            (243, &[], "(CREDENTIALS)", "relax_sandbox"),
            (250, &[], "exit status 250: systemd could not set up", "relax"),
        ];
        for (status, relaxed, want, not) in cases {
            let relaxed: Vec<String> = relaxed.iter().map(|s| s.to_string()).collect();
            let text = describe(*status, &relaxed);
            assert!(text.contains(want), "{status}: {text}");
            assert!(!text.contains(not), "{status}: {text}");
        }
        let all: Vec<String> = MOUNTS.iter().map(|s| s.to_string()).collect();
        assert!(!describe(226, &all).contains("set `systemd.relax_sandbox"), "nothing left to relax");
    }

    #[test]
    fn every_suggested_directive_may_be_relaxed() {
        for f in TABLE {
            for d in f.relax {
                assert!(crate::config::SANDBOX_DIRECTIVES.contains(d), "{}: {d}", f.name);
            }
        }
    }
}

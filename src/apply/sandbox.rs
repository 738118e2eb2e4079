//! Runs kustomize where it cannot open an IPv4 or IPv6 socket at all: a seccomp filter installed
//! between fork and exec.

// kustomize runs on tenants' kustomization files. Every remote reference is refused before it
// runs (`build::refuse_remote_references`), and the filter makes the refusal not the only wall:
// a check that misses some remote form still fetches nothing and reaches no address from
// inside the cluster.
//
// The filter needs no privilege (it sets `no_new_privs` first) and stacks on the container
// runtime's own seccomp profile. A kernel or architecture without seccomp fails the build
// closed rather than run kustomize unconfined.

use std::sync::{Arc, OnceLock};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The filter, compiled once per process.
fn no_inet_sockets() -> Result<Arc<BpfProgram>, String> {
    static PROGRAM: OnceLock<Result<Arc<BpfProgram>, String>> = OnceLock::new();
    PROGRAM.get_or_init(compile).clone()
}

fn compile() -> Result<Arc<BpfProgram>, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
    let family = |af: libc::c_int| -> Result<SeccompRule, String> {
        let condition = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            u64::try_from(af).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        SeccompRule::new(vec![condition]).map_err(|e| e.to_string())
    };
    let rules = [(
        libc::SYS_socket,
        vec![family(libc::AF_INET)?, family(libc::AF_INET6)?],
    )]
    .into_iter()
    .collect();
    let errno = u32::try_from(libc::EACCES).map_err(|e| e.to_string())?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno),
        arch,
    )
    .map_err(|e| e.to_string())?;
    BpfProgram::try_from(filter)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// Makes `command`'s process unable to open network sockets.
pub fn deny_network(command: &mut tokio::process::Command) -> Result<(), String> {
    let program = no_inet_sockets().map_err(|e| format!("cannot confine kustomize: {e}"))?;
    // SAFETY: the closure runs between fork and exec; it only reads the program compiled
    // beforehand and makes two system calls (prctl, seccomp), with no allocation or lock.
    unsafe {
        command.pre_exec(move || {
            seccompiler::apply_filter(&program).map_err(|e| match e {
                seccompiler::Error::Prctl(io) | seccompiler::Error::Seccomp(io) => io,
                _ => std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            })
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A confined child cannot connect anywhere, though a listener is there to take it.
    #[tokio::test]
    async fn a_confined_process_opens_no_inet_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let script = format!(
            "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=5)\n    print('connected')\nexcept OSError as e:\n    print('refused', e.errno)\n"
        );
        let run = |confined: bool| {
            let script = script.clone();
            async move {
                let mut command = tokio::process::Command::new("python3");
                command.arg("-c").arg(script);
                if confined {
                    deny_network(&mut command).unwrap();
                }
                let out = command.output().await.unwrap();
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            }
        };
        assert_eq!(run(false).await, "connected", "the probe itself works");
        assert_eq!(
            run(true).await,
            format!("refused {}", libc::EACCES),
            "confined: socket() is refused"
        );
    }
}

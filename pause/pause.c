/*
 * skiff's pause program: the first process of every pod sandbox.
 *
 * It exists only to hold the pod's namespaces (network, IPC) open while the app
 * containers join them, so it must do nothing, cost nothing and never die on its own.
 * Because it is PID 1 of its container it also has two duties a shell or an app
 * would neglect:
 *   - SIGINT/SIGTERM must end it promptly: PID 1 gets no default signal actions, so
 *     without handlers `docker stop` would always wait the whole grace period and
 *     then SIGKILL it.
 *   - it reaps zombies: orphaned processes in the pod get re-parented to it.
 *
 * Built as a static executable (no libc in the FROM-scratch image).
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* A stop request is a normal end of the sandbox, hence exit status 0. */
static void on_stop(int signo)
{
	(void)signo;
	_exit(0);
}

/* Reap every child that has exited; loop because signals of the same kind coalesce. */
static void on_child(int signo)
{
	int saved_errno = errno; /* waitpid may clobber errno of the interrupted code */

	(void)signo;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	errno = saved_errno;
}

static int install(int signo, void (*handler)(int))
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = handler;
	sigemptyset(&sa.sa_mask);
	/* SA_RESTART: a child exiting must not break the pause() loop with EINTR noise. */
	sa.sa_flags = SA_RESTART | (signo == SIGCHLD ? SA_NOCLDSTOP : 0);
	return sigaction(signo, &sa, NULL);
}

int main(void)
{
	static const char failed[] = "pause: cannot install signal handlers\n";

	if (install(SIGINT, on_stop) < 0 || install(SIGTERM, on_stop) < 0 ||
	    install(SIGCHLD, on_child) < 0) {
		/* write(2) rather than stdio: keeps the static binary tiny. */
		if (write(STDERR_FILENO, failed, sizeof(failed) - 1) < 0)
			return 1;
		return 1;
	}
	for (;;)
		pause();
}

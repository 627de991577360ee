package funchost

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// worker is one start of the handler process and its readiness check: the host's
// HttpWorkerProcess + HttpWorkerChannel (src/WebJobs.Script/Workers/Http/HttpWorkerProcess.cs,
// HttpWorkerChannel.cs, src/WebJobs.Script/Workers/ProcessManagement/WorkerProcess.cs).
type worker struct {
	id       string
	port     int
	cmd      *exec.Cmd
	exited   chan struct{}
	exitCode int
	disposed atomic.Bool

	mu      sync.Mutex
	errTail []string // the last three stderr lines logged as errors (WorkerProcess's queue)
}

// dispatcher states, as FunctionInvocationDispatcherState.
type dispatcherState int

const (
	stateInitializing dispatcherState = iota
	stateInitialized
	stateRestarting
	stateStopped
)

func (s dispatcherState) String() string {
	return [...]string{"Initializing", "Initialized", "WorkerProcessRestarting", "Stopped"}[s]
}

// errorThreshold and errorWindow: HttpFunctionInvocationDispatcher.ErrorEventsThreshold (3) and
// WorkerConstants.WorkerRestartErrorIntervalThresholdInMinutes (30).
const (
	errorThreshold = 3
	errorWindow    = 30 * time.Minute
)

// startWorker starts the handler and, in the background, waits for it to answer. It follows
// HttpWorkerProcess.CreateWorkerProcess (the environment variables), DefaultWorkerProcessFactory
// (executable, working directory, arguments) and HttpFunctionInvocationDispatcher.
// InitializeHttpWorkerChannelAsync (the state turns Initialized only once the handler answered).
func (h *Host) startWorker() {
	// A new worker id for every start, but the same port: HttpWorkerOptions (and its Port) is
	// configured once per host (HttpWorkerChannelFactory.Create passes the same options).
	w := &worker{id: newUUID(), port: h.port, exited: make(chan struct{})}
	cmd := exec.Command(h.app.executable, h.args()...)
	cmd.Dir = h.app.workingDirectory
	port := strconv.Itoa(w.port)
	cmd.Env = append(append([]string(nil), h.opts.Env...),
		"FUNCTIONS_HTTPWORKER_PORT="+port,
		"FUNCTIONS_HTTPWORKER_ID="+w.id,
		"FUNCTIONS_CUSTOMHANDLER_PORT="+port,
		"FUNCTIONS_CUSTOMHANDLER_WORKER_ID="+w.id,
		"FUNCTIONS_APP_ROOT_PATH="+h.app.root,
	)
	w.cmd = cmd
	// Plain pipes rather than exec's copying: the exit is noticed when the process ends, even if
	// a child it left behind still holds its output open.
	stdout, stdoutW, err1 := os.Pipe()
	stderr, stderrW, err2 := os.Pipe()
	if err1 != nil || err2 != nil {
		h.logf("pipes: %v %v", err1, err2)
		return
	}
	cmd.Stdout, cmd.Stderr = stdoutW, stderrW

	// Started under the lock, so that stop() never finds a worker whose process is not there yet.
	h.mu.Lock()
	if h.state == stateStopped {
		h.mu.Unlock()
		stdout.Close()
		stderr.Close()
		stdoutW.Close()
		stderrW.Close()
		return
	}
	h.cur = w
	h.starts++
	h.logf("Starting worker process:%s %s (port %d, worker %s)", h.app.executable, strings.Join(cmd.Args[1:], " "), w.port, w.id)
	err := cmd.Start()
	h.mu.Unlock()
	stdoutW.Close()
	stderrW.Close()
	if err != nil {
		// WorkerProcess.StartProcessAsync faults; the channel never turns Initialized and no
		// error event is raised, so invocations wait until the dispatcher's wait runs out.
		h.logf("Failed to start Worker Channel. Process fileName: %s: %v", h.app.executable, err)
		stdout.Close()
		stderr.Close()
		close(w.exited)
		w.disposed.Store(true)
		return
	}
	go func() { h.readOutput(w, stdout, false); stdout.Close() }()
	go func() { h.readOutput(w, stderr, true); stderr.Close() }()
	go func() {
		err := cmd.Wait()
		w.exitCode = exitCode(cmd, err)
		time.Sleep(20 * time.Millisecond) // let the last output lines be logged first
		close(w.exited)
		h.processExited(w)
	}()
	go h.waitReady(w)
}

// args builds the command line: arguments, then the quoted defaultWorkerPath, then
// workerArguments, joined with spaces as DefaultWorkerProcessFactory.GetArguments does, and
// split again the way .NET splits ProcessStartInfo.Arguments (spaces; double quotes group).
func (h *Host) args() []string {
	var b strings.Builder
	for _, a := range h.app.arguments {
		b.WriteString(" " + expandPercent(a, h.opts.Env))
	}
	if h.app.workerPath != "" {
		b.WriteString(` "` + h.app.workerPath + `"`)
	}
	for _, a := range h.app.workerArguments {
		b.WriteString(" " + expandPercent(a, h.opts.Env))
	}
	var out []string
	var cur strings.Builder
	quoted, any := false, false
	for _, r := range b.String() {
		switch {
		case r == '"':
			quoted, any = !quoted, true
		case (r == ' ' || r == '\t') && !quoted:
			if any {
				out = append(out, cur.String())
				cur.Reset()
				any = false
			}
		default:
			cur.WriteRune(r)
			any = true
		}
	}
	if any {
		out = append(out, cur.String())
	}
	return out
}

// readOutput logs the handler's output line by line as WorkerProcess does: stdout as
// information; stderr as a warning when the line mentions "warn", else as an error
// (HttpWorkerDescription.UseStdErrorStreamForErrorsOnly is true), keeping the last three errors
// for the message logged when the process exits.
func (h *Host) readOutput(w *worker, r io.Reader, isStderr bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		level := "Information"
		if isStderr {
			level = "Error"
			if strings.Contains(strings.ToLower(line), "warn") {
				level = "Warning"
			} else {
				w.mu.Lock()
				w.errTail = append(w.errTail, line)
				if len(w.errTail) > 3 {
					w.errTail = w.errTail[1:]
				}
				w.mu.Unlock()
			}
			if h.opts.HandlerStderr != nil {
				fmt.Fprintln(h.opts.HandlerStderr, line)
			}
		} else if h.opts.HandlerStdout != nil {
			fmt.Fprintln(h.opts.HandlerStdout, line)
		}
		h.logf("[%s] %s", level, line)
	}
	_, _ = io.Copy(io.Discard, r)
}

// waitReady pings GET http://127.0.0.1:port/ every 25 ms (DefaultHttpWorkerService.IsWorkerReady
// through Utility.DelayAsync, which counts only the pauses against the timeout). Any HTTP answer,
// whatever its status, means ready; only a refused or failed connection (a SocketException)
// means wait. Past customHandler.initializationTimeout the channel raises a worker error
// (HttpWorkerChannel.DelayUntilWokerInitialized).
func (h *Host) waitReady(w *worker) {
	url := fmt.Sprintf("http://127.0.0.1:%d/", w.port)
	var waited time.Duration
	for {
		if w.disposed.Load() {
			return
		}
		err := h.ping(url)
		if err == nil || !isSocketError(err) {
			break
		}
		if waited >= h.initTimeout {
			h.logf("Failed to start http worker process. workerId:%s: Initializing HttpWorker timed out.", w.id)
			h.workerError(w, errors.New("Initializing HttpWorker timed out."))
			return
		}
		time.Sleep(pollInterval)
		waited += pollInterval
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if w.disposed.Load() || h.cur != w || h.state == stateStopped {
		return
	}
	h.logf("Worker process started and initialized. workerId:%s", w.id)
	h.setState(stateInitialized)
}

// ping is the host's ping: an HttpClient whose timeout is functionTimeout + 1 minute
// (DefaultHttpWorkerService's constructor); the answer is not read.
func (h *Host) ping(url string) error {
	timeout := h.functionTimeout + time.Minute
	if h.functionTimeout == 0 {
		timeout = time.Duration(1<<31-1) * time.Millisecond
	}
	c := &http.Client{Transport: h.pingTransport, Timeout: timeout}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

func isSocketError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// processExited is WorkerProcess.OnProcessExited: exit code 0 is left alone (no restart, the
// dispatcher stays as it was), 200 asks for a restart (HttpWorkerRestartEvent, not counted as
// an error), anything else is a worker error.
func (h *Host) processExited(w *worker) {
	if w.disposed.Load() {
		return
	}
	switch w.exitCode {
	case 0:
		h.logf("Worker process %d exited with code 0; the host takes no action", w.cmd.Process.Pid)
	case 200:
		h.logf("Language Worker Process exited and needs to be restarted.")
		h.restart(w, false)
	default:
		w.mu.Lock()
		tail := strings.Join(w.errTail, ",")
		w.mu.Unlock()
		err := fmt.Errorf("%s exited with code %d\n %s", h.app.executable, w.exitCode, tail)
		h.logf("Language Worker Process exited. Pid=%d. %v", w.cmd.Process.Pid, err)
		h.workerError(w, err)
	}
}

// workerError is HttpFunctionInvocationDispatcher.WorkerError: count the error (errors more than
// 30 minutes after the last one start the count again), dispose the channel and start a new
// one, or stop the host after the third.
func (h *Host) workerError(w *worker, err error) {
	h.logf("Handling WorkerErrorEvent for workerId:%s. Failed with: %v", w.id, err)
	h.restart(w, true)
}

func (h *Host) restart(w *worker, isError bool) {
	h.mu.Lock()
	if h.state == stateStopped || w.disposed.Load() {
		h.mu.Unlock()
		return
	}
	if isError {
		now := time.Now()
		if n := len(h.errorTimes); n > 0 && now.Sub(h.errorTimes[n-1]) > errorWindow {
			h.errorTimes = nil
		}
		h.errorTimes = append(h.errorTimes, now)
	}
	h.setState(stateRestarting)
	cur := h.cur
	count := len(h.errorTimes)
	h.mu.Unlock()

	if cur != nil {
		cur.dispose()
	}
	if count < errorThreshold {
		h.logf("Restarting http invoker channel (errors: %d)", count)
		h.startWorker()
		return
	}
	h.logf("Exceeded http worker restart retry count. Shutting down Functions Host")
	h.stop()
}

// restartForTimeout is WebScriptHostExceptionHandler.OnTimeoutExceptionAsync's
// RestartWorkerWithInvocationIdAsync: dispose the (only) channel and start a new one, without
// counting an error.
func (h *Host) restartForTimeout() {
	h.mu.Lock()
	cur := h.cur
	h.mu.Unlock()
	if cur != nil {
		h.restart(cur, false)
	}
}

// dispose is WorkerProcess.Dispose: Process.Kill() (SIGKILL on Linux), then wait for the exit.
func (w *worker) dispose() {
	if !w.disposed.CompareAndSwap(false, true) {
		return
	}
	select {
	case <-w.exited:
		return
	default:
	}
	if w.cmd.Process != nil {
		_ = w.cmd.Process.Kill()
	}
	<-w.exited
}

// exitCode is what .NET's Process.ExitCode reports on Linux: the code, or 128 + the signal.
func exitCode(cmd *exec.Cmd, err error) int {
	st := cmd.ProcessState
	if st == nil {
		return -1
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return st.ExitCode()
}

// setState changes the dispatcher's state and wakes whoever waits on it; h.mu is held.
func (h *Host) setState(s dispatcherState) {
	if h.state == stateStopped {
		return
	}
	h.state = s
	close(h.changed)
	h.changed = make(chan struct{})
}

// waitInitialized is WorkerFunctionInvoker.DelayUntilFunctionDispatcherInitializedOrShutdown: an
// invocation that finds the dispatcher not Initialized polls every 25 ms for up to
// (ErrorEventsThreshold + 1) x initializationTimeout in whole seconds; past that the host stops.
func (h *Host) waitInitialized(ctx context.Context) (*worker, error) {
	limit := time.Duration(errorThreshold+1) * time.Duration(int(h.initTimeout.Seconds())) * time.Second
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		h.mu.Lock()
		st, cur, changed := h.state, h.cur, h.changed
		h.mu.Unlock()
		switch st {
		case stateInitialized:
			return cur, nil
		case stateStopped:
			return nil, errors.New("the host is stopped")
		}
		select {
		case <-changed:
		case <-deadline.C:
			h.logf("Final functionDispatcher state: %s. Initialization timed out and host is shutting down", st)
			h.stop()
			return nil, errors.New("the handler did not become ready")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func freePort() int {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

package funchost

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The defaults below are the host's (paths are in github.com/Azure/azure-functions-host).
const (
	// src/WebJobs.Script/Workers/Http/Configuration/HttpWorkerOptions.cs: InitializationTimeout.
	defaultInitializationTimeout = 30 * time.Second
	// src/WebJobs.Script/Config/ScriptJobHostOptionsSetup.cs: DefaultFunctionTimeout, used for
	// every SKU but (non-Flex) Consumption, whose DefaultConsumptionFunctionTimeout is 5 min.
	defaultFunctionTimeout = 30 * time.Minute
	// src/WebJobs.Script/Workers/Http/HttpProxyService/DefaultHttpProxyService.cs:
	// ForwarderRequestConfig.ActivityTimeout.
	defaultActivityTimeout = 240 * time.Second
	// src/WebJobs.Script/Workers/WorkerConstants.cs: WorkerReadyCheckPollingIntervalMilliseconds.
	pollInterval = 25 * time.Millisecond
	// src/WebJobs.Script/ScriptConstants.cs: DefaultMaxRequestBodySize (Kestrel's limit in
	// src/WebJobs.Script.WebHost/Program.cs).
	maxRequestBodySize = 104857600
	// The version the host reports in X-Azure-Functions-HostVersion (ScriptHost.Version).
	hostVersion = "4.1040.0.0"
)

// app is what the host reads from the function app's folder.
type app struct {
	root string

	executable       string // customHandler.description.defaultExecutablePath, resolved
	workerPath       string // defaultWorkerPath
	workingDirectory string
	arguments        []string
	workerArguments  []string
	port             int // customHandler.port; 0: a free port for each start

	initializationTimeout time.Duration
	functionTimeout       time.Duration // 0: none (host.json "-1")
	routePrefix           string
	customHeaders         map[string]string

	functions []function
}

// function is one HTTP-triggered function (its folder's function.json).
type function struct {
	name      string
	route     []string // the route template's segments, prefix included
	methods   []string // upper case; empty: every method
	authLevel string
}

// hostFile is the part of host.json the host's custom-handler code reads. encoding/json matches
// names case-insensitively, as .NET configuration does.
type hostFile struct {
	FunctionTimeout *string `json:"functionTimeout"`
	CustomHandler   *struct {
		Description *struct {
			DefaultExecutablePath string   `json:"defaultExecutablePath"`
			DefaultWorkerPath     string   `json:"defaultWorkerPath"`
			WorkingDirectory      string   `json:"workingDirectory"`
			Arguments             []string `json:"arguments"`
			WorkerArguments       []string `json:"workerArguments"`
		} `json:"description"`
		EnableProxyingHttpRequest   bool            `json:"enableProxyingHttpRequest"`
		EnableForwardingHttpRequest bool            `json:"enableForwardingHttpRequest"`
		Port                        json.RawMessage `json:"port"`
		InitializationTimeout       *string         `json:"initializationTimeout"`
	} `json:"customHandler"`
	Extensions struct {
		HTTP struct {
			RoutePrefix   *string           `json:"routePrefix"`
			CustomHeaders map[string]string `json:"customHeaders"`
		} `json:"http"`
	} `json:"extensions"`
}

// readApp reads host.json and the function folders the way the host configures a custom handler:
// src/WebJobs.Script/Workers/Http/Configuration/HttpWorkerOptionsSetup.cs (the customHandler
// section, working directory relative to the app root, arguments, port) and
// src/WebJobs.Script/Workers/Http/HttpWorkerDescription.cs (ApplyDefaultsAndValidate: a relative
// defaultExecutablePath is taken from the app root when that file exists, otherwise looked up
// as a command).
func readApp(root string, env []string) (*app, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(root, "host.json"))
	if err != nil {
		return nil, err
	}
	var h hostFile
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("host.json: %w", err)
	}
	ch := h.CustomHandler
	if ch == nil {
		return nil, errors.New("host.json has no customHandler section")
	}
	if !ch.EnableProxyingHttpRequest {
		return nil, errors.New("host.json: funchost models customHandler.enableProxyingHttpRequest: true only")
	}
	d := ch.Description
	if d == nil {
		return nil, errors.New("host.json: Missing worker Description.") // the host's own message
	}
	a := &app{root: root, initializationTimeout: defaultInitializationTimeout, functionTimeout: defaultFunctionTimeout, routePrefix: "api"}
	a.executable = expandPercent(d.DefaultExecutablePath, env)
	if a.executable == "" {
		return nil, errors.New("host.json: WorkerDescription DefaultExecutablePath cannot be empty")
	}
	if !filepath.IsAbs(a.executable) {
		if full := filepath.Join(root, a.executable); fileExists(full) {
			a.executable = full
		}
	}
	a.workerPath = expandPercent(d.DefaultWorkerPath, env)
	a.workingDirectory = root
	if wd := expandPercent(d.WorkingDirectory, env); wd != "" {
		if filepath.IsAbs(wd) {
			a.workingDirectory = wd
		} else {
			a.workingDirectory = filepath.Join(root, wd)
		}
	}
	a.arguments, a.workerArguments = d.Arguments, d.WorkerArguments
	if len(ch.Port) > 0 && string(ch.Port) != "null" {
		p, err := strconv.Atoi(strings.Trim(string(ch.Port), `"`))
		if err != nil {
			return nil, fmt.Errorf("host.json: customHandler.port %s: %w", ch.Port, err)
		}
		a.port = p
	}
	if ch.InitializationTimeout != nil {
		if a.initializationTimeout, err = parseTimeSpan(*ch.InitializationTimeout); err != nil {
			return nil, fmt.Errorf("host.json: customHandler.initializationTimeout: %w", err)
		}
	}
	if h.FunctionTimeout != nil {
		t, err := parseTimeSpan(*h.FunctionTimeout)
		switch {
		case err != nil:
			return nil, fmt.Errorf("host.json: functionTimeout: %w", err)
		case t == -24*time.Hour: // "-1", a TimeSpan of minus one day
			a.functionTimeout = 0 // unbounded, allowed on Flex Consumption, Premium and Dedicated
		case t < time.Second:
			return nil, errors.New("host.json: FunctionTimeout must be greater than 00:00:01")
		default:
			a.functionTimeout = t
		}
	}
	if p := h.Extensions.HTTP.RoutePrefix; p != nil {
		a.routePrefix = *p
	}
	a.customHeaders = h.Extensions.HTTP.CustomHeaders
	if a.functions, err = readFunctions(root, a.routePrefix); err != nil {
		return nil, err
	}
	return a, nil
}

// readFunctions finds the HTTP-in, HTTP-out functions: a folder per function holding function.json.
// The route is the routePrefix and the trigger's route (the folder name if none), as the HTTP
// extension's route factory builds it.
func readFunctions(root, prefix string) ([]function, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	var fns []function
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, e.Name(), "function.json"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var f struct {
			Disabled bool `json:"disabled"`
			Bindings []struct {
				Type      string   `json:"type"`
				Direction string   `json:"direction"`
				Route     *string  `json:"route"`
				Methods   []string `json:"methods"`
				AuthLevel string   `json:"authLevel"`
			} `json:"bindings"`
		}
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("%s/function.json: %w", e.Name(), err)
		}
		if f.Disabled {
			continue
		}
		// FunctionMetadata.IsHttpInAndOutFunction: one httpTrigger in, one http out.
		var in, out int
		fn := function{name: e.Name(), authLevel: "function"}
		template := e.Name()
		for _, bd := range f.Bindings {
			switch {
			case strings.EqualFold(bd.Type, "httpTrigger") && strings.EqualFold(bd.Direction, "in"):
				in++
				if bd.Route != nil {
					template = *bd.Route
				}
				for _, m := range bd.Methods {
					fn.methods = append(fn.methods, strings.ToUpper(m))
				}
				if bd.AuthLevel != "" {
					fn.authLevel = strings.ToLower(bd.AuthLevel)
				}
			case strings.EqualFold(bd.Type, "http") && strings.EqualFold(bd.Direction, "out"):
				out++
			}
		}
		if in != 1 || out != 1 || len(f.Bindings) != 2 {
			return nil, fmt.Errorf("%s/function.json: funchost runs HTTP-in, HTTP-out functions only", e.Name())
		}
		full := strings.Trim(strings.Trim(prefix, "/")+"/"+strings.Trim(template, "/"), "/")
		if full != "" {
			fn.route = strings.Split(full, "/")
		}
		fns = append(fns, fn)
	}
	if len(fns) == 0 {
		return nil, errors.New("no HTTP function (a folder holding function.json) in the app")
	}
	return fns, nil
}

// match reports whether a request path (decoded, without the query) fits the route template:
// literal segments (case-insensitive), {name} (one segment), {name?} (an optional last segment)
// and {*name} (the rest, possibly empty), as ASP.NET Core route templates do.
func (f *function) match(path string) bool {
	var segs []string
	if p := strings.Trim(path, "/"); p != "" {
		segs = strings.Split(p, "/")
	}
	for i, t := range f.route {
		switch {
		case strings.HasPrefix(t, "{*"): // {*name} and {**name}
			return true
		case strings.HasPrefix(t, "{") && strings.HasSuffix(t, "?}"):
			return len(segs) <= i+1 && i == len(f.route)-1
		case i >= len(segs):
			return false
		case strings.HasPrefix(t, "{"):
			if segs[i] == "" {
				return false
			}
		case !strings.EqualFold(t, segs[i]):
			return false
		}
	}
	return len(segs) == len(f.route)
}

func (f *function) allows(method string) bool {
	if len(f.methods) == 0 {
		return true
	}
	for _, m := range f.methods {
		if m == method {
			return true
		}
	}
	return false
}

// parseTimeSpan reads .NET's TimeSpan text: [-][d.]hh:mm[:ss[.fffffff]] or a whole number of days.
func parseTimeSpan(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var days int
	if !strings.Contains(s, ":") {
		n, err := strconv.Atoi(s)
		if err != nil {
			return 0, fmt.Errorf("%q is not a TimeSpan", s)
		}
		days, s = n, "0:0"
	} else if d, rest, ok := strings.Cut(s, "."); ok && !strings.Contains(d, ":") {
		n, err := strconv.Atoi(d)
		if err != nil {
			return 0, fmt.Errorf("%q is not a TimeSpan", s)
		}
		days, s = n, rest
	}
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return 0, fmt.Errorf("%q is not a TimeSpan", s)
	}
	h, err1 := strconv.Atoi(parts[0])
	m, err2 := strconv.Atoi(parts[1])
	var sec float64
	var err3 error
	if len(parts) == 3 {
		sec, err3 = strconv.ParseFloat(parts[2], 64)
	}
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, fmt.Errorf("%q is not a TimeSpan", s)
	}
	d := time.Duration(days)*24*time.Hour + time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(sec*float64(time.Second))
	if neg {
		d = -d
	}
	return d, nil
}

// expandPercent expands %NAME% from env, as Environment.ExpandEnvironmentVariables does for the
// worker description (WorkerDescription.ExpandEnvironmentVariables); unknown names stay.
func expandPercent(s string, env []string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '%')
		if i < 0 {
			break
		}
		j := strings.IndexByte(s[i+1:], '%')
		if j < 0 {
			break
		}
		name := s[i+1 : i+1+j]
		if v, ok := lookup(env, name); ok && name != "" {
			b.WriteString(s[:i])
			b.WriteString(v)
			s = s[i+j+2:]
			continue
		}
		b.WriteString(s[:i+1])
		s = s[i+1:]
	}
	b.WriteString(s)
	return b.String()
}

func lookup(env []string, name string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == name {
			return v, true
		}
	}
	return "", false
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

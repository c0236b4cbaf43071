// Command pulumi-language-python is a small Python language host for the e2e tests.
//
// The upstream host (module .../sdk/python/cmd/pulumi-language-python/v3) cannot be fetched on the
// project's machines, so this one is written against the same public pieces it uses: the
// LanguageRuntime gRPC service and the Python toolchain package of github.com/pulumi/pulumi/sdk/v3
// (virtualenv/pip/uv/poetry handling), and it runs programs through the SDK's own
// `pulumi-language-python-exec` script, which must sit beside this binary.
//
// It implements what `pulumi preview/up/destroy`, `pulumi about`, `pulumi install` and the
// Automation API need: Run, GetRequiredPackages/Plugins, GetPluginInfo, InstallDependencies,
// About and GetProgramDependencies. Code generation and templates are not supported.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pbempty "google.golang.org/protobuf/types/known/emptypb"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
)

// version is stamped by the build script (-X main.version=...).
var version = "0.0.0-dev"

// exitCodeUserActionable is what the exec script returns after it already showed the error.
const exitCodeUserActionable = 32

const execScriptName = "pulumi-language-python-exec"

func main() {
	// The engine passes its address as the last positional argument; older engines also passed
	// a few flags, accepted here so that they do not break flag parsing.
	flags := flag.NewFlagSet("pulumi-language-python", flag.ContinueOnError)
	flags.String("tracing", "", "ignored: tracing endpoint")
	flags.String("root", "", "ignored: project root (taken from each request)")
	flags.String("virtualenv", "", "ignored: taken from the program's runtime options")
	flags.String("typechecker", "", "ignored")
	flags.String("toolchain", "", "ignored")
	showVersion := flags.Bool("version", false, "print the version and exit")
	if err := flags.Parse(os.Args[1:]); err != nil {
		cmdutil.Exit(err)
	}
	if *showVersion {
		fmt.Println(version)
		return
	}
	engineAddress := ""
	if args := flags.Args(); len(args) > 0 {
		engineAddress = args[len(args)-1]
	}

	execScript, err := findExecScript()
	if err != nil {
		cmdutil.Exit(err)
	}

	host := &pythonHost{engineAddress: engineAddress, execScript: execScript}
	cancel := make(chan bool)
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: cancel,
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, host)
			return nil
		},
		Options: rpcutil.OpenTracingServerInterceptorOptions(nil),
	})
	if err != nil {
		cmdutil.Exit(fmt.Errorf("could not start language host RPC server: %w", err))
	}
	// The engine reads the port from our first line of output.
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		cmdutil.Exit(fmt.Errorf("language host RPC stopped serving: %w", err))
	}
}

// findExecScript looks beside this binary first (how releases ship it), then on PATH.
func findExecScript() (string, error) {
	if self, err := os.Executable(); err == nil {
		if resolved, err := filepath.EvalSymlinks(self); err == nil {
			self = resolved
		}
		candidate := filepath.Join(filepath.Dir(self), execScriptName)
		if _, err := os.Stat(candidate); err == nil {
			return candidate, nil
		}
	}
	if p, err := exec.LookPath(execScriptName); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s not found beside the language host nor on PATH", execScriptName)
}

type pythonHost struct {
	pulumirpc.UnimplementedLanguageRuntimeServer

	mu            sync.Mutex
	engineAddress string
	execScript    string
}

func (h *pythonHost) engine() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.engineAddress
}

// programInfo is the subset of pulumirpc.ProgramInfo this host uses.
type programInfo struct {
	root, programDir, entryPoint string
	opts                         toolchain.PythonOptions
}

func parseProgramInfo(info *pulumirpc.ProgramInfo) (programInfo, error) {
	if info == nil {
		return programInfo{}, errors.New("the engine sent no program info (engine too old for this host)")
	}
	pi := programInfo{
		root:       info.GetRootDirectory(),
		programDir: info.GetProgramDirectory(),
		entryPoint: info.GetEntryPoint(),
	}
	pi.opts = toolchain.PythonOptions{Root: pi.root, ProgramDir: pi.programDir, Toolchain: toolchain.Pip}
	options := info.GetOptions().AsMap()
	if v, ok := options["virtualenv"].(string); ok {
		pi.opts.Virtualenv = v
	}
	if v, ok := options["toolchain"].(string); ok {
		switch strings.ToLower(v) {
		case "", "pip":
			pi.opts.Toolchain = toolchain.Pip
		case "uv":
			pi.opts.Toolchain = toolchain.Uv
		case "poetry":
			pi.opts.Toolchain = toolchain.Poetry
		default:
			return pi, fmt.Errorf("unsupported python toolchain %q", v)
		}
	}
	if v, ok := options["typechecker"].(string); ok && v != "" {
		return pi, fmt.Errorf("typechecker %q is not supported by this language host", v)
	}
	return pi, nil
}

func (pi programInfo) toolchain() (toolchain.Toolchain, error) {
	return toolchain.ResolveToolchain(pi.opts)
}

func (h *pythonHost) Handshake(
	_ context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.engineAddress = req.GetEngineAddress()
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *pythonHost) GetPluginInfo(context.Context, *pbempty.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

// pluginScan is run by the program's Python: it reads the pulumi-plugin.json that every Pulumi
// package ships at its top level, which names the provider plugin (and version) it needs.
const pluginScan = `
import importlib.metadata as md, json, sys
found = []
for dist in md.distributions():
    for f in dist.files or []:
        parts = f.parts
        if len(parts) == 2 and parts[1] == "pulumi-plugin.json":
            try:
                data = json.loads(f.read_text())
            except Exception:
                continue
            if data.get("resource"):
                found.append(data)
json.dump(found, sys.stdout)
`

type pluginJSON struct {
	Resource         bool   `json:"resource"`
	Name             string `json:"name"`
	Version          string `json:"version"`
	Server           string `json:"server"`
	Parameterization *struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		Value   []byte `json:"value"`
	} `json:"parameterization"`
}

func (h *pythonHost) requiredPackages(ctx context.Context, info *pulumirpc.ProgramInfo) (
	[]*pulumirpc.PackageDependency, error,
) {
	pi, err := parseProgramInfo(info)
	if err != nil {
		return nil, err
	}
	tc, err := pi.toolchain()
	if err != nil {
		return nil, err
	}
	cmd, err := tc.Command(ctx, "-c", pluginScan)
	if err != nil {
		return nil, err
	}
	cmd.Dir = pi.programDir
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("listing Pulumi packages in the Python environment: %w", err)
	}
	var plugins []pluginJSON
	if err := json.Unmarshal(out, &plugins); err != nil {
		return nil, fmt.Errorf("parsing the Pulumi package list: %w", err)
	}
	deps := make([]*pulumirpc.PackageDependency, 0, len(plugins))
	for _, p := range plugins {
		dep := &pulumirpc.PackageDependency{
			Name: p.Name, Kind: "resource", Version: p.Version, Server: p.Server,
		}
		if p.Parameterization != nil {
			dep.Parameterization = &pulumirpc.PackageParameterization{
				Name: p.Parameterization.Name, Version: p.Parameterization.Version, Value: p.Parameterization.Value,
			}
		}
		deps = append(deps, dep)
	}
	return deps, nil
}

func (h *pythonHost) GetRequiredPackages(
	ctx context.Context, req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	deps, err := h.requiredPackages(ctx, req.GetInfo())
	if err != nil {
		return nil, err
	}
	return &pulumirpc.GetRequiredPackagesResponse{Packages: deps}, nil
}

func (h *pythonHost) GetRequiredPlugins(
	ctx context.Context, req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	deps, err := h.requiredPackages(ctx, req.GetInfo())
	if err != nil {
		return nil, err
	}
	var plugins []*pulumirpc.PluginDependency
	for _, d := range deps {
		if d.Parameterization != nil {
			continue // parameterized packages cannot be expressed as plain plugins
		}
		plugins = append(plugins, &pulumirpc.PluginDependency{
			Name: d.Name, Kind: d.Kind, Version: d.Version, Server: d.Server,
		})
	}
	return &pulumirpc.GetRequiredPluginsResponse{Plugins: plugins}, nil
}

func (h *pythonHost) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	pi, err := parseProgramInfo(req.GetInfo())
	if err != nil {
		return nil, err
	}
	tc, err := pi.toolchain()
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}

	program := pi.programDir
	if pi.entryPoint != "" && pi.entryPoint != "." {
		program = filepath.Join(pi.programDir, pi.entryPoint)
	}
	args := []string{
		"-u", h.execScript,
		"--monitor", req.GetMonitorAddress(),
		"--engine", h.engine(),
		"--project", req.GetProject(),
		"--stack", req.GetStack(),
		"--pwd", req.GetPwd(),
		"--dry_run", fmt.Sprintf("%t", req.GetDryRun()),
		"--parallel", fmt.Sprintf("%d", req.GetParallel()),
		"--root_directory", pi.root,
	}
	if org := req.GetOrganization(); org != "" {
		args = append(args, "--organization", org)
	}
	args = append(args, program)
	args = append(args, req.GetArgs()...)

	cmd, err := tc.Command(ctx, args...)
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	env, err := runEnv(cmd.Env, req)
	if err != nil {
		return nil, err
	}
	cmd.Env = env
	cmd.Dir = req.GetPwd()
	// The engine shows our stdout/stderr to the user, like the upstream host does.
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr

	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if exitErr.ExitCode() == exitCodeUserActionable {
				return &pulumirpc.RunResponse{Bail: true}, nil
			}
			return &pulumirpc.RunResponse{
				Error: fmt.Sprintf("Program exited with non-zero exit code: %d", exitErr.ExitCode()),
			}, nil
		}
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("Problem executing program (could not run language executor): %v", err)}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

// runEnv passes the stack config the way the SDK reads it (pulumi.runtime.get_config_env).
func runEnv(base []string, req *pulumirpc.RunRequest) ([]string, error) {
	if base == nil {
		base = os.Environ()
	}
	configMap := req.GetConfig()
	if configMap == nil {
		configMap = map[string]string{} // the SDK expects an object, never null
	}
	config, err := json.Marshal(configMap)
	if err != nil {
		return nil, err
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	secrets, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, err
	}
	return append(base, "PULUMI_CONFIG="+string(config), "PULUMI_CONFIG_SECRET_KEYS="+string(secrets)), nil
}

func (h *pythonHost) InstallDependencies(
	req *pulumirpc.InstallDependenciesRequest, server grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse],
) error {
	pi, err := parseProgramInfo(req.GetInfo())
	if err != nil {
		return err
	}
	tc, err := pi.toolchain()
	if err != nil {
		return err
	}
	stdout := &streamWriter{send: func(b []byte) error {
		return server.Send(&pulumirpc.InstallDependenciesResponse{Stdout: b})
	}}
	stderr := &streamWriter{send: func(b []byte) error {
		return server.Send(&pulumirpc.InstallDependenciesResponse{Stderr: b})
	}}
	return tc.InstallDependencies(server.Context(), pi.programDir, req.GetUseLanguageVersionTools(),
		true /*showOutput*/, stdout, stderr)
}

type streamWriter struct{ send func([]byte) error }

func (w *streamWriter) Write(p []byte) (int, error) {
	b := make([]byte, len(p))
	copy(b, p)
	if err := w.send(b); err != nil {
		return 0, err
	}
	return len(p), nil
}

var _ io.Writer = (*streamWriter)(nil)

func (h *pythonHost) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	pi, err := parseProgramInfo(req.GetInfo())
	if err != nil {
		return nil, err
	}
	tc, err := pi.toolchain()
	if err != nil {
		return nil, err
	}
	info, err := tc.About(ctx)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.AboutResponse{
		Executable: info.PythonExecutable,
		Version:    info.PythonVersion.String(),
		Metadata:   map[string]string{"toolchain": toolchain.Name(pi.opts.Toolchain)},
	}, nil
}

func (h *pythonHost) GetProgramDependencies(
	ctx context.Context, req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	pi, err := parseProgramInfo(req.GetInfo())
	if err != nil {
		return nil, err
	}
	tc, err := pi.toolchain()
	if err != nil {
		return nil, err
	}
	pkgs, err := tc.ListPackages(ctx, req.GetTransitiveDependencies())
	if err != nil {
		return nil, err
	}
	deps := make([]*pulumirpc.DependencyInfo, 0, len(pkgs))
	for _, p := range pkgs {
		deps = append(deps, &pulumirpc.DependencyInfo{Name: p.Name, Version: p.Version})
	}
	return &pulumirpc.GetProgramDependenciesResponse{Dependencies: deps}, nil
}

func (h *pythonHost) RuntimeOptionsPrompts(
	context.Context, *pulumirpc.RuntimeOptionsRequest,
) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

func (h *pythonHost) RunPlugin(
	*pulumirpc.RunPluginRequest, grpc.ServerStreamingServer[pulumirpc.RunPluginResponse],
) error {
	return status.Error(codes.Unimplemented, "running Python plugins is not supported by this language host")
}

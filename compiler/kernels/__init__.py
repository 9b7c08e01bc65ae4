"""The Triton back end's one home: the kernel contract, building, launching, loading.

    spec         KernelSpec / LaunchConfig / KernelKind / Config: the typed kernel record
                 codegen, autotune, precompile, the pipeline and storage exchange (no Triton)
    build        every triton.compile and private Triton call for building: signatures,
                 cross-compiling cubins on a CPU, backend warm-up, host launchers
    launch       Launcher (the wrapper's kernel handle) and torch's generic launcher
    host         what a generated wrapper binds once per module load: launch sites, ATen
                 ops, allocation and aliasing, so its call passes positional arguments only
    interpreter  the CPU shim generated kernels need under Triton's interpreter
    load         generated source -> module; one kernel alone; stored cubins -> kernels
    precompile   a static-shape module's kernels compiled ahead of its first call, in a pool
                 of worker processes (compile_worker); kernels equal but for their names once
    worker_build what a compile worker runs: the module's kernels alone, Triton without torch

Nothing here imports the rest of the compiler except ``compiler.artifact`` and
``compiler.config``; the rest of the compiler reaches Triton only through this package
(``tests/test_architecture.py`` checks both).

Private torch and Triton APIs, each used in one module, and the fallback when it is missing
or changes:

| API | where | fallback |
|---|---|---|
| ``triton.compiler.ASTSource`` | build, worker_build | none: kiln needs it to compile ahead of a launch (Triton >= 3.2) |
| ``triton.backends.compiler.GPUTarget`` | build | none, as above |
| ``triton.runtime.driver.active.get_current_target`` | build | none (GPU only) |
| ``triton.runtime.jit.mangle_type`` | build | a table of torch dtype -> Triton type |
| ``triton.backends.nvidia.driver.CudaLauncher`` | worker_build (re-exported by build) | skip: the first launch builds the host launcher |
| ``triton.knobs.cache`` (dir, scope) | build, worker_build | none (Triton >= 3.4) |
| ``triton.compiler.compiler.CompiledKernel(src, files, hash)`` | load | the stored binary is skipped: the kernel compiles at its first launch |
| ``triton.runtime.interpreter.TensorHandle`` | interpreter | none: the CPU path needs it |
| ``triton.runtime.interpreter.InterpreterBuilder.cast_impl`` | interpreter | wrapped for bf16 casts; when missing, the interpreter's own (truncating) casts |
| ``triton.knobs.runtime.launch_enter_hook`` / ``exit_hook`` | launch | read only: with a hook set Triton's own launcher runs |
| ``torch._C._StaticCudaLauncher`` | launch | Triton's own launcher (CPU builds, torch < 2.8, kernels it cannot run) |
| ``torch._C._cuda_getCurrentRawStream`` | launch, host | as above; host: None, each launch finds its stream |
| ``torch._C._dynamo.guards._empty_strided_cpu`` / ``_cuda`` | host | ``torch.empty_strided`` |
| ``torch._C._dynamo.guards._reinterpret_tensor`` | host | ``Tensor.as_strided`` |
| ``OpOverload._op`` | host | the ``OpOverload`` itself |
| a compiled kernel's direct ``kernel[grid](*args)`` runner | launch | ``fn[grid](...)`` through Triton's JIT |
"""

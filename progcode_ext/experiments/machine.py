"""The machine a number was measured on, described once: the experiments' reports and the
benchmarks' JSON (bench/) name the same machine the same way."""
import os
import platform

import torch


def machine_info(threads, cuda=False):
    """{python, torch, cpu_count, threads, cpu (its model name where /proc/cpuinfo has one)}, plus
    {gpu, cuda} with `cuda` where there is one."""
    cpu = platform.processor() or platform.machine()
    if os.path.exists('/proc/cpuinfo'):
        with open('/proc/cpuinfo') as f:
            cpu = next((line.split(':', 1)[1].strip() for line in f
                        if line.startswith('model name')), cpu)
    info = dict(python=platform.python_version(), torch=torch.__version__,
                cpu_count=os.cpu_count(), threads=threads, cpu=cpu)
    if cuda and torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda)
    return info


def machine():
    """One line for a report: CPU (and GPU), cores, torch and Python versions."""
    info = machine_info(torch.get_num_threads(), cuda=True)
    gpu = f", GPU {info['gpu']}" if 'gpu' in info else ''
    return (f"{info['cpu']}, {info['cpu_count']} cores{gpu}; torch {info['torch']}, "
            f"Python {info['python']}")


def commit():
    """The checkout's commit (short), or 'unknown': where a measured number came from."""
    import subprocess
    try:
        return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True,
                              text=True, cwd=os.path.dirname(__file__)).stdout.strip() or 'unknown'
    except OSError:
        return 'unknown'

"""The ERP, WMS/3PL and carrier sandboxes (docs/sandboxes.md): Starlette apps that behave
like the systems fulfillment talks to, including how they fail.

In-process (tests, the stack supervisor)::

    from stack.sandboxes import Sandbox, erp, wms, carrier

    async with Sandbox(erp.create_app("token", rate_429=0.2)) as sandbox:
        sandbox.url  # http://127.0.0.1:<free port>

As processes: ``python -m stack.sandboxes.erp --port P --token T`` (likewise ``wms`` and
``carrier``), initial settings from ``DWF_ERP_*`` / ``DWF_WMS_*`` / ``DWF_CARRIER_*``.
"""

from stack.sandboxes.common import Sandbox, serve

__all__ = ["Sandbox", "serve"]

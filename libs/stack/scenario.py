"""The ``make demo`` scenario against a running stack. It grows with each issue into the full
end-to-end flow; today it proves all four services are SERVING and discoverable by reflection.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from stack.supervisor import health_status


@dataclass
class Check:
    service: str
    address: str
    health: str
    reflected: list[str]

    @property
    def ok(self) -> bool:
        return self.health == "SERVING" and any(name.startswith("dwf.") for name in self.reflected)


async def reflected_services(address: str) -> list[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for response in stub.ServerReflectionInfo(iter([request]), timeout=5):
            return [service.name for service in response.list_services_response.service]
    return []


async def check_services(addresses: dict[str, str]) -> list[Check]:
    checks = []
    for name, address in addresses.items():
        services = await reflected_services(address)
        own = [s for s in services if s.startswith("dwf.")]
        status = await health_status(address, own[0] if own else "")
        checks.append(Check(name, address, status, services))
    return checks

"""Queries of DSPy datasets, programs and versions; every lookup is by owner (another user's row
is not found)."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from trellis.dspy.models import DSPyDataset, DSPyProgram, DSPyProgramVersion


async def owned_dataset(session: AsyncSession, owner_id: str, dataset_id: str) -> DSPyDataset | None:
    statement = select(DSPyDataset).where(DSPyDataset.owner_id == owner_id, DSPyDataset.id == dataset_id)
    return (await session.execute(statement)).scalar_one_or_none()


async def datasets(session: AsyncSession, owner_id: str) -> list[DSPyDataset]:
    statement = select(DSPyDataset).where(DSPyDataset.owner_id == owner_id).order_by(DSPyDataset.name)
    return list((await session.execute(statement)).scalars())


async def versions_using(session: AsyncSession, dataset_id: str) -> int:
    statement = select(func.count()).select_from(DSPyProgramVersion).where(DSPyProgramVersion.dataset_id == dataset_id)
    return int((await session.execute(statement)).scalar_one())


async def delete_dataset(session: AsyncSession, dataset_id: str) -> None:
    await session.execute(delete(DSPyDataset).where(DSPyDataset.id == dataset_id))


async def delete_program(session: AsyncSession, program_id: str) -> None:
    """The program and, by cascade, its versions (its datasets are the owner's, kept)."""
    await session.execute(delete(DSPyProgramVersion).where(DSPyProgramVersion.program_id == program_id))
    await session.execute(delete(DSPyProgram).where(DSPyProgram.id == program_id))


async def owned_program(
    session: AsyncSession, owner_id: str, program_id: str, *, for_update: bool = False
) -> DSPyProgram | None:
    statement = select(DSPyProgram).where(DSPyProgram.owner_id == owner_id, DSPyProgram.id == program_id)
    if for_update:
        statement = statement.with_for_update()
    return (await session.execute(statement)).scalar_one_or_none()


async def programs(session: AsyncSession, owner_id: str) -> list[DSPyProgram]:
    statement = select(DSPyProgram).where(DSPyProgram.owner_id == owner_id).order_by(DSPyProgram.name)
    return list((await session.execute(statement)).scalars())


async def versions(session: AsyncSession, program_id: str) -> list[DSPyProgramVersion]:
    statement = (
        select(DSPyProgramVersion)
        .where(DSPyProgramVersion.program_id == program_id)
        .order_by(DSPyProgramVersion.version)
    )
    return list((await session.execute(statement)).scalars())


async def version(session: AsyncSession, program_id: str, number: int) -> DSPyProgramVersion | None:
    statement = select(DSPyProgramVersion).where(
        DSPyProgramVersion.program_id == program_id, DSPyProgramVersion.version == number
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def version_of_run(session: AsyncSession, program_id: str, run_id: str) -> DSPyProgramVersion | None:
    statement = select(DSPyProgramVersion).where(
        DSPyProgramVersion.program_id == program_id, DSPyProgramVersion.run_id == run_id
    )
    return (await session.execute(statement)).scalars().first()


async def latest_version(session: AsyncSession, program_id: str) -> int:
    statement = select(func.max(DSPyProgramVersion.version)).where(DSPyProgramVersion.program_id == program_id)
    return int((await session.execute(statement)).scalar_one() or 0)


async def program_by_name(session: AsyncSession, owner_id: str, name: str) -> DSPyProgram | None:
    statement = select(DSPyProgram).where(DSPyProgram.owner_id == owner_id, DSPyProgram.name == name)
    return (await session.execute(statement)).scalar_one_or_none()

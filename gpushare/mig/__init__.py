"""MIG: geometry rules (`geometry`), the commands and mig-parted configs that create a geometry
(`emit`), and choosing a geometry for a set of models (`fit`). Pure: no NVML, no subprocess.

The profile data lives in `gpushare.catalog.mig`.
"""

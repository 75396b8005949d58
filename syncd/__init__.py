"""syncd — mirror SuperOffice CRM contact and person pictures into Dynamics 365 Business Central."""

__version__ = "0.1.0"

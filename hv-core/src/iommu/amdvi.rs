//! AMD-Vi: placeholder until the AMD IOMMU driver lands.
